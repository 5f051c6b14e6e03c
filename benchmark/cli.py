"""`bench`: the scoring harness (not built yet)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Say that `bench` is not built yet and exit non-zero."""
    parser = argparse.ArgumentParser(
        prog="bench", description="pirs bench: the scoring harness. Not built yet.")
    parser.parse_args(argv)
    print("bench: not built yet in this version of pirs (the scoring harness).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

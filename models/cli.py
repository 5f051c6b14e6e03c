"""`restore`: reference training and inference (not built yet)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Say that `restore` is not built yet and exit non-zero."""
    parser = argparse.ArgumentParser(
        prog="restore", description="pirs restore: reference training and inference. Not built yet.")
    parser.parse_args(argv)
    print("restore: not built yet in this version of pirs (reference training and inference).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

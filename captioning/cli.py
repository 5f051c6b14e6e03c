"""`caption`: LLaVA high- and low-level captions (not built yet)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Say that `caption` is not built yet and exit non-zero."""
    parser = argparse.ArgumentParser(
        prog="caption", description="pirs caption: LLaVA high- and low-level captions. Not built yet.")
    parser.parse_args(argv)
    print("caption: not built yet in this version of pirs (LLaVA high- and low-level captions).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

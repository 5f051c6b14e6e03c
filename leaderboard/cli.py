"""`leaderboard`: paper tables beside our scores (not built yet)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Say that `leaderboard` is not built yet and exit non-zero."""
    parser = argparse.ArgumentParser(
        prog="leaderboard", description="pirs leaderboard: paper tables beside our scores. Not built yet.")
    parser.parse_args(argv)
    print("leaderboard: not built yet in this version of pirs (paper tables beside our scores).", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

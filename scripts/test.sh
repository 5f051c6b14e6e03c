#!/usr/bin/env bash
# Install pirs with its test tools into .venv and run the whole test suite (and ruff).
set -euo pipefail
PIRS_EXTRAS="[test]" source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
.venv/bin/ruff check .
# The leaderboard's page is tested in a real headless browser (Debian's chromium).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Two workers (one per core), each test file on one worker so module fixtures are built once; every math
# library runs one thread per worker (tests/conftest.py).
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"

#!/usr/bin/env bash
# Install pirs with its test tools into .venv and run the whole test suite (and ruff).
set -euo pipefail
PIRS_EXTRAS="[test]" source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"

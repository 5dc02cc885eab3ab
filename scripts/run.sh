#!/usr/bin/env bash
# Installs the studio into .venv on first use, then starts it. Flags go to app.py:
#   bash scripts/run.sh --preset tiny
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh requirements.txt
exec .venv/bin/python app.py "$@"

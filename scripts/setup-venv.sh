#!/usr/bin/env bash
# Creates .venv (once) and installs what $1 (a requirements file) lists. Shared by run.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# A stamp of the requirements files skips the (slow) resolver when nothing changed.
stamp=".venv/.installed-$(cat requirements*.txt | sha1sum | cut -c1-12)-$(basename "$requirements")"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -r "$requirements" 2> >(grep -v "^WARNING: Location" >&2)
  touch "$stamp"
fi

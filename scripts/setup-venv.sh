#!/usr/bin/env bash
# Creates .venv and installs what $1 (a requirements file) lists, at the versions of
# requirements.lock. Shared by run.sh and test.sh. When the lock changes the venv is built anew, so
# it holds the tested set and nothing left over from an older one.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
python=${PYTHON:-python3}
lock_stamp=".venv/.lock-$(cat requirements.lock | sha1sum | cut -c1-12)"
if [ -d .venv ] && [ ! -f "$lock_stamp" ]; then
  echo "requirements.lock changed: building .venv anew." >&2
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip 2> >(grep -v "^WARNING: Location" >&2)
  touch "$lock_stamp"
fi
# A stamp of the requirements files skips the (slow) resolver when nothing changed.
stamp=".venv/.installed-$(cat requirements*.txt requirements.lock | sha1sum | cut -c1-12)-$(basename "$requirements")"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet -r "$requirements" 2> >(grep -v "^WARNING: Location" >&2)
  touch "$stamp"
fi

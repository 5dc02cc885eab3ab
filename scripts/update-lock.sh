#!/usr/bin/env bash
# Moves the lock forward: resolves the newest versions that requirements.txt's and
# requirements-dev.txt's ranges allow (uv pip compile), installs them in a scratch venv, runs the quick
# suite there, and only when it passes rewrites requirements.lock and requirements.txt's tested set.
# It prints what moved. Run it when you want newer packages, or after editing a range.
# Extra arguments go to pytest (default: -m "not slow" -n 2 -q).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
scratch=.venv-lock
marker="# --- tested set: written by scripts/update-lock.sh from requirements.lock, do not edit below ---"
# torch's build belongs to the machine (CUDA, MPS or CPU), so neither it nor the CUDA libraries it
# brings are pinned; requirements.txt's range bounds it.
platform_build='^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)=='

rm -rf "$scratch"
"$python" -m venv "$scratch"
"$scratch/bin/python" -m pip install --quiet --upgrade pip uv 2> >(grep -v "^WARNING: Location" >&2)
mkdir -p "$scratch/in"
# The hand-written ranges only: the tested set and the -r/-c lines would hold the resolver back.
awk -v marker="$marker" '$0 == marker {exit} {print}' requirements.txt | grep -v -E '^\s*-[rc]' > "$scratch/in/runtime.in"
grep -v -E '^\s*-[rc]' requirements-dev.txt > "$scratch/in/dev.in"

compile() {  # compile OUT INPUT... : universal, so the same lock serves Linux, macOS and Windows
  local out=$1; shift
  "$scratch/bin/uv" pip compile --quiet --universal --python-version 3.11 --no-header --upgrade \
    --custom-compile-command "bash scripts/update-lock.sh" "$@" -o "$out.all"
  # Drop the platform build's entries (a package line and its indented "# via" lines).
  awk -v pat="$platform_build" '/^[^ #]/ {skip = ($0 ~ pat)} !skip' "$out.all" \
    | sed "s#$scratch/in/runtime.in#requirements.txt#; s#$scratch/in/dev.in#requirements-dev.txt#" > "$out"
}
compile "$scratch/requirements.lock" "$scratch/in/runtime.in" "$scratch/in/dev.in"
compile "$scratch/runtime.pins" "$scratch/in/runtime.in" -c "$scratch/requirements.lock" --no-annotate

# requirements-dev.txt reads the new lock as its constraints, requirements.txt the new pins.
cp requirements-dev.txt "$scratch/in/"
{ cat "$scratch/in/runtime.in"; echo "$marker"; cat "$scratch/runtime.pins"; } > "$scratch/in/requirements.txt"
cp "$scratch/requirements.lock" "$scratch/in/requirements.lock"
"$scratch/bin/python" -m pip install --quiet -r "$scratch/in/requirements-dev.txt" \
  2> >(grep -v "^WARNING: Location" >&2)
torch_version=$("$scratch/bin/python" -c "import torch; print(torch.__version__)")

echo "update-lock: running the quick suite on the new versions (fresh tiny models)..."
if [ $# -eq 0 ]; then set -- -m "not slow" -n 2 -q; fi
if ! STUDIO_TEST_MODELS="$PWD/$scratch/test-models" STUDIO_LOCK_FILE="$PWD/$scratch/requirements.lock" \
    "$scratch/bin/python" -m pytest "$@"; then
  echo "update-lock: the suite failed on the new versions; requirements.lock is unchanged." >&2
  echo "update-lock: narrow the range of the package that broke in requirements.txt, then run again." >&2
  exit 1
fi

pins() { grep -E '^[A-Za-z0-9]' "$1" 2>/dev/null | sed 's/ *;.*//' | sort -u; }
moved=$(diff <(pins requirements.lock) <(pins "$scratch/requirements.lock") | grep -E '^[<>]' || true)
{ echo "# The tested set: every package the studio and its tests install, at the versions the quick suite"
  echo "# passed with (torch $torch_version; torch, torchvision and the CUDA libraries are left to the"
  echo "# machine). Written by: bash scripts/update-lock.sh. Installed through requirements-dev.txt (-c)."
  cat "$scratch/requirements.lock"; } > requirements.lock
{ cat "$scratch/in/runtime.in"; echo "$marker"; cat "$scratch/runtime.pins"; } > requirements.txt
echo "update-lock: the suite passed; requirements.lock and requirements.txt rewritten."
if [ -n "$moved" ]; then echo "What moved (< before, > now):"; echo "$moved"; else echo "Nothing moved."; fi
rm -rf "$scratch"

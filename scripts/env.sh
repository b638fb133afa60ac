#!/usr/bin/env bash
# Create or reuse polyfid's local virtual environment and print its path.
#   POLYFID_VENV        where the venv lives (default: <repo>/.venv)
#   POLYFID_TORCH       pip requirement(s) for torch, installed FIRST (default: torch==2.13.0, the CPU wheel here).
#                       GPU users: POLYFID_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#                       or create the venv with their own CUDA torch; an importable torch is never replaced.
#   POLYFID_EXTRAS      extras to install (default: dev,generate,md)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${POLYFID_VENV:-$root/.venv}
extras=${POLYFID_EXTRAS:-dev,generate,md}
py=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv" >&2
stamp="$venv/.polyfid-installed"
want=$(cat "$root/pyproject.toml" "$root/scripts/constraints.txt" | sha256sum | cut -c1-16)-$extras
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "polyfid: setting up $venv (first run takes a few minutes)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    # shellcheck disable=SC2086  # POLYFID_TORCH may hold several pip words
    "$venv/bin/python" -m pip install -q ${POLYFID_TORCH:-torch==2.13.0} >&2
  fi
  tv=$("$venv/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
  "$venv/bin/python" -m pip install -q -c "$root/scripts/constraints.txt" "torch==$tv" -e "$root[$extras]" >&2
  echo "$want" > "$stamp"
fi
echo "$venv"

#!/usr/bin/env bash
# polyfid's test command: set up/reuse the local venv, lint, check the layer contract, then run the test suite.
# Extra args go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$root/scripts/env.sh")
cd "$root"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check polyfid data_shards pretrain finetune tests benchmarks
"$venv/bin/lint-imports" --no-cache # the layer contract in pyproject.toml: core < data_shards < models < pretrain < finetune < cli
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
"$venv/bin/python" -m pytest -q "$@"

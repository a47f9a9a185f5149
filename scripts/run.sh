#!/usr/bin/env bash
# Sets up the environment when missing, then runs rulelang's main job on the built-in model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rulelang check rules/*.yaml

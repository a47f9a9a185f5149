#!/usr/bin/env bash
# Sets up the environment when missing, then runs rulelang's main job on the built-in model:
# check the rule library, then explain four built-in digits with three rules into out/grid.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
.venv/bin/rulelang check
.venv/bin/rulelang explain lrp-zplus gradient guided-backprop --model digits-cnn --data digits -n 4 -o out/grid.png

#!/usr/bin/env bash
# Sets up the environment when missing, then runs rulelang's main job on the built-in model: `rulelang analyze`
# checks every library rule on digits-cnn with the built-in test digits (static verdict, layer maps, CSC, sanity
# checks) and writes out/analysis/report.{md,json} and its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # torch's OpenMP threads spin-wait on a small shared CPU
.venv/bin/rulelang analyze -o out/analysis

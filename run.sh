#!/usr/bin/env bash
# Install (once) and run the main job: Taylor + L2 whole-network pruning of the thesis' LeNet on
# MNIST. Fetches MNIST and trains the base LeNet first if they are not cached yet.
# Extra arguments go to `fmprune prune` (e.g. ./run.sh --retrain 50 --min-accuracy 0.99).
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
source "$root/scripts/setup-env.sh"
exec "$root/.venv/bin/fmprune" prune --criterion taylor --normalize l2 --scope all "$@"

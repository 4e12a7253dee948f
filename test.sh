#!/usr/bin/env bash
# Install (once) and run the test suite; extra arguments go to pytest (e.g. -m slow).
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
source "$root/scripts/setup-env.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"

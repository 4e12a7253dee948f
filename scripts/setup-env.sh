#!/usr/bin/env bash
# Create .venv and install fmprune (CPU PyTorch pinned in pyproject.toml) once; a second call
# reinstalls nothing unless pyproject.toml or the extras changed. Sourced by run.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.fmprune-installed"
extras="test,export,torchvision,tensorboard,ray,tune,docs"   # what the tests, the README's examples and the docs site use
want="$( (cat "$root/pyproject.toml"; echo "$extras") | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]"
    echo "$want" > "$stamp"
fi

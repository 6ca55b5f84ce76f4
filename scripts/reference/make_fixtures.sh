#!/usr/bin/env bash
# Regenerates the HF transformers / HF tokenizers fixtures (see README.md): runs SCRIPT (a file of
# scripts/reference/, default make_fixtures.py) with the pinned virtualenv build/pyref, built by
# pyref.sh when it is missing or the requirements changed. Run from anywhere; paths are taken
# from the repository root. PYTHON names the interpreter for a new virtualenv (default python3).
#
# Usage: scripts/reference/make_fixtures.sh [SCRIPT [ARGS...]]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/reference/pyref.sh
script=${1:-make_fixtures.py}
shift || true
exec "$PYREF" "scripts/reference/$script" "$@"

#!/usr/bin/env bash
# Regenerates the HF transformers / HF tokenizers fixtures (see make_fixtures.py and README.md).
# Builds the virtualenv build/pyref from requirements.txt when it is missing or the requirements
# changed (pyref.sh), then runs make_fixtures.py. Run from anywhere; paths are taken from the
# repository root. PYTHON names the interpreter for a new virtualenv (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/reference/pyref.sh
exec "$PYREF" scripts/reference/make_fixtures.py "$@"

#!/usr/bin/env bash
# Regenerates the HF transformers / HF tokenizers fixtures (see README.md): runs SCRIPT (a file of
# scripts/reference/, default make_fixtures.py) with the pinned virtualenv build/pyref, which it
# builds from requirements.txt when it is missing or the requirements changed. Run from anywhere;
# paths are taken from the repository root.
#
# Usage: scripts/reference/make_fixtures.sh [SCRIPT [ARGS...]]
# PYTHON names the interpreter for a new virtualenv (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=build/pyref
req=scripts/reference/requirements.txt
stamp=$venv/requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "make_fixtures: building $venv from $req (about 2.4 GB to download, 4.3 GB on disk)" >&2
	rm -rf "$venv"
	"${PYTHON:-python3}" -m venv "$venv"
	# --no-deps: requirements.txt is the full, pinned set. torch's declared dependencies would
	# also bring triton and more CUDA wheels that a CPU run never loads.
	"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: -r "$req"
	echo "$want" >"$stamp"
fi
script=${1:-make_fixtures.py}
shift || true
exec "$venv/bin/python" "scripts/reference/$script" "$@"

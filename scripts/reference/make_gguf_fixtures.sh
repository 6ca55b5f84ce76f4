#!/usr/bin/env bash
# Regenerates the GGUF fixtures (see make_gguf_fixtures.py): the dequantization fixture always,
# and the SmolLM2 logits and tokenizer ids when `make real-model` has fetched the GGUF.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYREF_GGUF=1
. scripts/reference/pyref.sh
mkdir -p llama/gguf/testdata
model=build/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$model" ]; then
	exec "$PYREF" scripts/reference/make_gguf_fixtures.py "$model"
fi
echo "make_gguf_fixtures: no $model (make real-model): writing the dequantization fixture only" >&2
exec "$PYREF" scripts/reference/make_gguf_fixtures.py

#!/usr/bin/env bash
# Remakes the tiny chat model's data: the corpus (build/tinychat/corpus.jsonl, not committed) and
# the committed llama/tinychat/tokenizer.json and tokenizer_config.json, then prints their SHA-256.
# Run from anywhere; paths are taken from the repository root. Deterministic: the same sources
# give byte-identical files.
#
# Python: $PYTHON if set, else build/pyref/bin/python (the reference venv, see
# scripts/reference/make_fixtures.sh), else a small venv build/tinychat/venv with only PyPI
# tokenizers 0.20.2 (the Rust core the Go side links), made on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/tinychat
mkdir -p "$out"

make --no-print-directory build/tokenizers/libtokenizers.a >/dev/null
export CGO_LDFLAGS="-L$PWD/build/tokenizers" CGO_ENABLED=1

python=${PYTHON:-}
if [ -z "$python" ] && [ -x build/pyref/bin/python ]; then
	python=build/pyref/bin/python
fi
if [ -z "$python" ]; then
	python=$out/venv/bin/python
	if [ ! -x "$python" ]; then
		python3 -m venv "$out/venv"
		"$out/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: tokenizers==0.20.2
	fi
fi

go run scripts/tinychat/write.go -corpus "$out/corpus.jsonl"
"$python" scripts/tinychat/train_tokenizer.py "$out/corpus.jsonl" llama/tinychat/tokenizer.json --vocab-size 2048
go run scripts/tinychat/write.go -tokenizer-config llama/tinychat/tokenizer_config.json
sha256sum "$out/corpus.jsonl" llama/tinychat/tokenizer.json llama/tinychat/tokenizer_config.json

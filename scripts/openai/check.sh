#!/bin/bash
# Runs client_check.py (the official openai Python client, from PyPI, in build/openai-venv)
# against `tiller serve` on a tiny random model with a joy vector, on a loopback port, with an
# API key from $TILLER_API_KEY.
set -euo pipefail
cd "$(dirname "$0")/../.."
make tiller
work=build/openai-check
rm -rf "$work" && mkdir -p "$work/vectors"
bin/tiller init --config cmd/tiller/testdata/tiny-config.json --out "$work/model" --seed 1 >/dev/null 2>&1
bin/tiller derive --model "$work/model" --pairs joy --layer 1 --out "$work/vectors/joy.safetensors" >/dev/null 2>&1
if [ ! -x build/openai-venv/bin/python ]; then
	python3 -m venv build/openai-venv
	build/openai-venv/bin/pip install -q openai
fi
key=check-$RANDOM$RANDOM
TILLER_API_KEY=$key bin/tiller serve --model "$work/model" --vectors "$work/vectors" --addr 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.err" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	grep -q http:// "$work/serve.out" && break
	sleep 0.1
done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.out")
build/openai-venv/bin/python scripts/openai/client_check.py --base-url "$url/v1" --vector joy --hidden-size 64 --api-key "$key"

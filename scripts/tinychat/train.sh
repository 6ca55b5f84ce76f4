#!/usr/bin/env bash
# Remakes the embedded tiny chat model: the corpus and tokenizer (make.sh), then `tiller train`
# with the settings in llama/tinychat/model/README.md, then copies the checkpoint and its loss
# curve into llama/tinychat/model. About 15 minutes on 2 CPU cores. Training is seeded and its
# sums run in a fixed order, so a rerun with the same thread count (--threads, default all cores)
# writes the same bytes.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/tinychat/make.sh
make --no-print-directory tiller
out=build/tinychat/model
bin/tiller train --config llama/tinychat/config.json --tokenizer llama/tinychat/tokenizer.json \
	--data build/tinychat/corpus.jsonl --out "$out" \
	--steps 1500 --batch 16 --seq-len 96 --lr 3e-3 --warmup 100 --eval-every 250 --seed 1
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json loss.csv loss.png; do
	cp "$out/$f" llama/tinychat/model/
done
echo "llama/tinychat/model updated; update the losses and examples in its README.md"

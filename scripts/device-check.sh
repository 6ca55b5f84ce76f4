#!/usr/bin/env bash
# The one-call device check (issue 6). Runs ON the device machine, from the repository root, with
# build/device/ carried over (`make device-check-build` makes it here: the cuda test binary of
# gpu/, the gpubench binary and the Llama-3.1-8B config). In order, within about 4 minutes:
#   1. the card: nvidia-smi's name and driver;
#   2. the gpu tests (conformance suite, kernel tests, whole model vs the CPU), -test.v;
#   3. gpubench: device-to-device copy bandwidth, each kernel at the Llama-3.1-8B shapes against
#      it, batch-1 greedy decode of the full 32-layer model (random bf16 weights made on the
#      device; CUDA graph per step and plain launches), prefill of 2048 tokens;
#   4. HF transformers on the same card (bench/peers/hf_baseline.py --quick);
#   5. the short table, last.
# Logs and JSON go to $OUT (or build/device/out when $OUT is unset). A failing step does not stop
# the others; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build/device/out}
mkdir -p "$out"
bin=build/device
failed=()
step() { echo; echo "== $(date +%T) $*"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$out/device.txt" || failed+=(nvidia-smi)

step "gpu tests: conformance, kernels, whole model (log: gpu-test.log)"
# Three processes, so that a device fault (which ends its process: the context is lost) in one
# group still lets the others run. SyncEachOp names the op that faulted.
: >"$out/gpu-test.log"
for group in 'TestConformance' 'TestGEMV|TestGEMMTensorCores|TestAttentionKernels|TestResidualRMSNorm|TestArgmax|TestGraph' 'TestModel'; do
	echo "-- go test -run '$group'" | tee -a "$out/gpu-test.log"
	(cd gpu && timeout 45 "../$bin/gpu.test" -test.v -test.run "$group" -test.timeout 40s) 2>&1 | tee -a "$out/gpu-test.log"
	rc=${PIPESTATUS[0]}
	[ "$rc" = 0 ] || failed+=("gpu tests $group (exit $rc)")
done

step "gpubench: copy peak, kernels, decode, prefill (log: gpubench.log, data: tiller.jsonl)"
rm -f "$out/tiller.jsonl"
timeout 100 "$bin/gpubench" -config "$bin/llama-3.1-8b-config.json" -out "$out/tiller.jsonl" 2>&1 | tee "$out/gpubench.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || failed+=("gpubench (exit $rc)")

step "HF transformers baseline, quick mode (log: hf.log, data: hf.jsonl)"
rm -f "$out/hf.jsonl"
timeout 70 python3 bench/peers/hf_baseline.py --quick --config "$bin/llama-3.1-8b-config.json" --out "$out/hf.jsonl" 2>&1 | tail -n 20 | tee "$out/hf.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || failed+=("hf baseline (exit $rc)")

step "results (table: table.md)"
python3 scripts/device-table.py "$out/tiller.jsonl" "$out/hf.jsonl" | tee "$out/table.md"
echo
echo "gpu tests:"; grep -E '^(--- (PASS|FAIL|SKIP)|PASS$|FAIL$|panic:)' "$out/gpu-test.log"
if [ ${#failed[@]} -gt 0 ]; then
	printf 'FAILED: %s\n' "${failed[@]}"
	exit 1
fi
echo "device check: all steps passed"

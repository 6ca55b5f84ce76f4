#!/usr/bin/env bash
# The one-call device check (issue 6). Runs ON the device machine, from the repository root, with
# build/device/ carried over (`make device-check-build` makes it here: the cuda test binary of
# gpu/, the gpubench binary, the cuda tiller and the Llama-3.1-8B config; and build/devpack.tgz,
# the same packed, which is what fits a 64 MiB transfer: unpack it with
# `tar -xzf build/devpack.tgz -C build` there). In order, in about
# 60–90 seconds:
#   1. the card: nvidia-smi's name and driver;
#   2. in the background, HF transformers writes a random 2-layer checkpoint at the Llama-3.1-8B
#      shape and its own logits for fixed ids (bench/gpubench/hf_logits.py), while
#   3. the gpu tests run (conformance suite, kernel tests with the tensor-core prefill attention,
#      the split-K GEMV and small-batch GEMM, the fused decode kernels, whole model vs the CPU in
#      every decoder form, steered decode vs the CPU's hooks), -test.v, in three processes;
#   4. gpubench -hf: tiller's logits on that checkpoint against HF's (prefill, runner decode, the
#      decoder generic and fused);
#   5. gpubench: device-to-device copy bandwidth, each GEMV (row-per-warp and split-K) and the
#      64-row GEMMs (prefill tiles, split-K) at the Llama-3.1-8B shapes against it, batch-1 greedy
#      decode of the full 32-layer model (random bf16 weights made on the device) in each form of
#      the step and steered at one layer, with per-kernel profiles, both prefill attention
#      kernels, and a 2048-token prefill;
#   6. tiller profile on a tiny fixture and on the 2-layer 8B-shaped checkpoint; tiller generate
#      --device cuda against --device cpu on a tiny random model; on the embedded tiny-chat model,
#      a joy vector (attribute, derive on the CPU), tiller eval --device cuda against cpu, and
#      tiller serve --device cuda answering a plain and a steered request;
#   7. only with HF_BASELINE=1: HF transformers' own decode and prefill (--quick, ~40 s more);
#   8. the short table, last.
# Logs and JSON go to $OUT (or build/device/out when $OUT is unset). A failing step does not stop
# the others; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build/device/out}
mkdir -p "$out"
bin=build/device
failed=()
t0=$(date +%s)
step() { echo; echo "== $(date +%T) (+$(($(date +%s) - t0)) s) $*"; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$out/device.txt" || failed+=(nvidia-smi)

# The 2-layer checkpoint: in RAM when /dev/shm has room (it is ~3.1 GB), else on disk.
hfdir=${TMPDIR:-/tmp}/tiller-hf-8b-2l
if [ "$(df --output=avail -B1G /dev/shm 2>/dev/null | tail -1 | tr -d ' ')" -ge 8 ] 2>/dev/null; then
	hfdir=/dev/shm/tiller-hf-8b-2l
fi
rm -rf "$hfdir"
step "HF reference checkpoint, in the background (log: hf-logits.log; $hfdir)"
timeout 75 python3 bench/gpubench/hf_logits.py --config "$bin/llama-3.1-8b-config.json" --layers 2 --tokens 32 --out "$hfdir" \
	>"$out/hf-logits.log" 2>&1 &
hfpid=$!

step "gpu tests: conformance, kernels, fused decode kernels, whole model (log: gpu-test.log)"
# Three processes, so that a device fault (which ends its process: the context is lost) in one
# group still lets the others run. SyncEachOp names the op that faulted.
: >"$out/gpu-test.log"
for group in 'TestConformance|TestGEMV|TestGEMMTensorCores|TestAttentionKernels|TestAttentionPrefillMMA|TestResidualRMSNorm|TestArgmax$|TestGraph' \
	'TestMatVec|TestAttentionDecodeRoPE|TestArgmaxAdvance|TestGEMMSmallBatch|TestSplitKParts' 'TestModel|TestDecoderSteered|TestRunnerSteeringOnDevice|TestGreedyBatchOnDevice'; do
	echo "-- go test -run '$group'" | tee -a "$out/gpu-test.log"
	(cd gpu && timeout 45 "../$bin/gpu.test" -test.v -test.run "$group" -test.timeout 40s) >>"$out/gpu-test.log" 2>&1
	rc=$?
	[ "$rc" = 0 ] || failed+=("gpu tests $group (exit $rc)")
	echo "   exit $rc"
done

step "HF logits at the Llama-3.1-8B shape, 2 layers (log: hf-check.log, data: hf.jsonl)"
wait "$hfpid"
rc=$?
tail -n 3 "$out/hf-logits.log"
rm -f "$out/hf.jsonl"
if [ "$rc" = 0 ]; then
	timeout 40 "$bin/gpubench" -hf "$hfdir" -out "$out/hf.jsonl" 2>&1 | tail -n 5 | tee "$out/hf-check.log"
	rc=${PIPESTATUS[0]}
	[ "$rc" = 0 ] || failed+=("hf logits comparison (exit $rc)")
else
	failed+=("hf_logits.py (exit $rc)")
fi

step "gpubench: copy peak, GEMVs, decode forms and their profiles, prefill (log: gpubench.log, data: tiller.jsonl)"
rm -f "$out/tiller.jsonl"
timeout 110 "$bin/gpubench" -config "$bin/llama-3.1-8b-config.json" -out "$out/tiller.jsonl" -cpuprofile "$out/batch-cpu.pprof" >"$out/gpubench.log" 2>&1
rc=$?
grep -E '"what":"(tiller_decode_b1|tiller_generate_batch|failed|done)"' "$out/gpubench.log"
[ "$rc" = 0 ] || failed+=("gpubench (exit $rc)")

step "tiller profile: a tiny fixture, and the 2-layer 8B-shaped checkpoint (log: profile.log, data: profile.jsonl)"
rm -f "$out/profile.jsonl"
: >"$out/profile.log"
for m in llama/testdata/hf/llama32 "$hfdir"; do
	[ -d "$m" ] || continue
	timeout 30 "$bin/tiller" profile --model "$m" --tokens 8 --step both --json "$out/profile.jsonl" >>"$out/profile.log" 2>&1
	rc=$?
	[ "$rc" = 0 ] || failed+=("tiller profile $m (exit $rc)")
done
rm -rf "$hfdir"

step "tiller generate --device cuda against --device cpu, greedy, a tiny random model (log: generate.log)"
tiny=${TMPDIR:-/tmp}/tiller-tiny
rm -rf "$tiny" "$out/generate.jsonl"
{
	"$bin/tiller" init --config cmd/tiller/testdata/tiny-config.json --out "$tiny" --seed 1 &&
		timeout 15 "$bin/tiller" generate --model "$tiny" --temperature 0 --max-tokens 24 "Hello there" >"$out/generate-cpu.txt" &&
		timeout 15 "$bin/tiller" generate --model "$tiny" --device cuda --temperature 0 --max-tokens 24 "Hello there" >"$out/generate-cuda.txt"
} >"$out/generate.log" 2>&1
rc=$?
if [ "$rc" = 0 ]; then
	same=false
	cmp -s "$out/generate-cpu.txt" "$out/generate-cuda.txt" && same=true
	echo "{\"what\":\"generate\",\"same_as_cpu\":$same}" >"$out/generate.jsonl"
	echo "cuda and cpu text identical: $same"
else
	failed+=("tiller generate (exit $rc)")
fi
rm -rf "$tiny"

step "steering on the GPU, tiny-chat: tiller eval --device cuda against cpu, tiller serve --device cuda (log: steer-gpu.log)"
sg=${TMPDIR:-/tmp}/tiller-steer-gpu
rm -rf "$sg"
mkdir -p "$sg/vectors"
(
	export TILLER_CACHE="$sg/cache"
	"$bin/tiller" attribute --pairs llama/tinychat/demo/joy-attribution.jsonl --align right --out "$sg/atp" >/dev/null &&
		"$bin/tiller" derive --pairs llama/tinychat/demo/joy-pairs.jsonl --locus "$sg/atp/locus.json" --out "$sg/vectors/joy.safetensors" &&
		for d in cpu cuda; do
			echo "-- eval --device $d"
			timeout 60 "$bin/tiller" eval --device "$d" --vector "$sg/vectors/joy.safetensors" --relative --sweep 0,0.4 \
				--prompts llama/tinychat/demo/prompts.jsonl --seed 1 --max-tokens 48 --out "$sg/eval-$d" 2>&1 | tail -n 3 || exit 1
		done &&
		{
			"$bin/tiller" serve --device cuda --vectors "$sg/vectors" --addr 127.0.0.1:18181 >"$sg/serve.log" 2>&1 &
			spid=$!
			for _ in $(seq 50); do curl -s 127.0.0.1:18181/v1/models >/dev/null && break; sleep 0.2; done
			ask() { curl -s --max-time 20 127.0.0.1:18181/v1/chat/completions -H "Content-Type: application/json" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"You know my husband Ben? He worked on the photo album last Saturday.\"}],\"max_tokens\":40,\"temperature\":0$1}"; echo; }
			echo "-- serve --device cuda, plain:"; ask ""
			echo "-- serve --device cuda, steered (joy, strength 30):"; ask ',"steering":[{"vector":"joy","strength":30}]'
			kill "$spid"
			wait "$spid" 2>/dev/null
			cat "$sg/serve.log"
		}
) >"$out/steer-gpu.log" 2>&1
rc=$?
grep -E '^(-- |0 |0\.4 |\{"choices|\{"error)' "$out/steer-gpu.log" | cut -c1-220
[ "$rc" = 0 ] || failed+=("steering on the GPU (exit $rc)")
grep -q '"choices"' "$out/steer-gpu.log" || failed+=("tiller serve --device cuda answered no completion")
rm -rf "$sg"

if [ "${HF_BASELINE:-0}" = 1 ]; then
	step "HF transformers baseline, quick mode (log: hf.log, data: hf-baseline.jsonl)"
	rm -f "$out/hf-baseline.jsonl"
	timeout 70 python3 bench/peers/hf_baseline.py --quick --config "$bin/llama-3.1-8b-config.json" --out "$out/hf-baseline.jsonl" 2>&1 | tail -n 20 >"$out/hf.log"
	[ "${PIPESTATUS[0]}" = 0 ] || failed+=("hf baseline")
fi

step "results (table: table.md)"
python3 scripts/device-table.py "$out" | tee "$out/table.md"
echo
echo "gpu tests:"
grep -E '^(--- (FAIL|SKIP)|FAIL|panic:)' "$out/gpu-test.log" | head -n 20
echo "$(grep -c '^--- PASS' "$out/gpu-test.log") tests passed, $(grep -c '^--- FAIL' "$out/gpu-test.log") failed, $(grep -c '^--- SKIP' "$out/gpu-test.log") skipped"
echo "wall: $(($(date +%s) - t0)) s"
# At most 8 files come back from the device machine: keep the table, the test log and the data,
# and fold every other log into one.
for f in device.txt hf-logits.log hf-check.log gpubench.log profile.log generate.log generate-cpu.txt generate-cuda.txt generate.jsonl steer-gpu.log hf.log; do
	[ -f "$out/$f" ] && { echo "==== $f"; cat "$out/$f"; rm -f "$out/$f"; }
done >"$out/logs.txt"
if [ ${#failed[@]} -gt 0 ]; then
	printf 'FAILED: %s\n' "${failed[@]}"
	exit 1
fi
echo "device check: all steps passed"

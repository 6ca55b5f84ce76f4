#!/usr/bin/env bash
# The one-call device check (issues 6, 15 and 16). Runs ON the device machine, from the repository
# root, with build/devpack.txz carried over (`make device-check-build` makes it here: the cuda
# test binary of gpu/, the gpubench binary, the cuda tiller, the Llama-3.1-8B and -3.2-1B configs
# and BUILD_INFO, the commit it was built from; packed, which is what fits a 64 MiB transfer).
# Steps run within a budget (BUDGET_S, default 540 s, under the 10-minute limit of one device
# command): each gets at most what is left, and a step that no longer fits is skipped and listed.
# Attribution on the device (issue 15) comes first, the inference checks of issue 6 after it:
#   1. unpack; the card: nvidia-smi's name, driver and memory, with the build's commit;
#   2. in the background, HF transformers writes random checkpoints — 2 layers at the
#      Llama-3.1-8B shape, and the whole Llama-3.2-1B shape — with its own logits for fixed ids
#      (bench/gpubench/hf_logits.py), and PyTorch autograd's gradients at every hook point and AtP
#      scores of 8 pairs on each (hf_attrib.py reference), while
#   3. the gpu tests run, -test.v, in seven processes (a device fault ends only its own): first
#      the Hopper prefill GEMM (wgmma + TMA) against the CPU and the mma.sync GEMM (when it fails,
#      everything after runs mma.sync); then the backward conformance suite and the f32-precision products; gradients, hooks and attribution
#      on the device vs the CPU; then issue 6's (conformance suite, kernel tests with the
#      tensor-core prefill attention, the split-K GEMV and small-batch GEMM, the fused decode
#      kernels, whole model vs the CPU in every decoder form, steered decode vs the CPU's hooks);
#      then issue 16's (the runner's decode steps against its op-by-op passes, bit-identical logits
#      at any batch size and row with the batch-invariant mode, the bf16 KV cache, CopyBandwidth
#      and ArgmaxRows on a thread with no current context);
#   4. gpubench -hf -grads -attrib: tiller's logits on the 8B-shaped checkpoint against HF's
#      (prefill, runner decode, the decoder generic and fused), its gradients at every hook point
#      and its AtP scores against PyTorch autograd's and the CPU's, exact patching on the GPU
#      against the CPU; then -grads -attrib on the 1B checkpoint;
#   5. AtP at the full Llama-3.1-8B shape (random bf16 weights on the device): the f32-precision
#      products at its layer shapes, one forward pass of a 64-token prompt, AtP of 40 pairs batched
#      by 1 and by 8 (gpubench -atp-bench), then PyTorch autograd doing the same AtP in bf16 and in
#      float32 (hf_attrib.py bench);
#   6. on the embedded tiny-chat model: tiller attribute --device cuda against --device cpu (every
#      score within 1e-4), derive --device cuda, tiller eval --device cuda against cpu, and tiller
#      serve --device cuda answering a plain and a steered request; tiller generate --device cuda
#      against --device cpu on a tiny random model;
#   7. gpubench: device-to-device copy bandwidth, each GEMV (row-per-warp and split-K) and the
#      64-row GEMMs (prefill tiles, split-K) at the Llama-3.1-8B shapes against it, the 2048-token
#      prefill GEMMs (mma.sync staged and pipelined, and on Hopper wgmma + TMA), batch-1 greedy
#      decode of the full 32-layer model (random bf16 weights made on the device) in each form of
#      the step and steered at one layer, with per-kernel profiles, both prefill attention
#      kernels; batch-1 greedy decode through the runner as tiller generate, steer, eval and serve
#      run it (bf16 and f32 KV cache; unsteered and steered at one layer), a 2048-token prefill
#      into each cache, and 64 rows generated plain and each steered; tiller profile on a tiny
#      fixture and on the 2-layer 8B-shaped checkpoint;
#   8. HF transformers' own speeds at the same shape (bench/peers/hf_baseline.py --quick --batch64:
#      2048-token prefill with sdpa, batch-1 decode, 64 rows with a static cache eager and then
#      compiled, within what is left of the budget; HF_BASELINE=0 skips it);
#   9. the short table, last.
# What comes back is $OUT (or build/device/out when $OUT is unset): table.md (the build's commit,
# the card and driver first, the steps skipped and failed last), gpu-test.log, and raw.tgz with
# every other log and JSON line, each file opening with the build's commit, the card and its
# driver. A failing step does not stop the others; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build/device/out}
mkdir -p "$out"
bin=build/device
failed=()
skipped=()
t0=$(date +%s)
deadline=$((t0 + ${BUDGET_S:-540}))
step() { echo; echo "== $(date +%T) (+$(($(date +%s) - t0)) s) $*"; }
# limit N is the timeout of a step that wants N seconds: N, or what is left of the budget less
# 20 s for the table and the archive.
limit() {
	local l=$((deadline - $(date +%s) - 20))
	echo $(($1 < l ? $1 : l))
}
# fits N NAME says whether N seconds are left for step NAME, and records it as skipped if not,
# or if NAME matches the extended regular expression $SKIP (e.g. SKIP='Backward|Gradients|atp|hf_attrib|1B'
# leaves the attribution checks to an earlier run and gives the budget to the rest).
fits() {
	if [ -n "${SKIP:-}" ] && [[ $2 =~ $SKIP ]]; then
		echo "skipped: $2 (SKIP)"
		skipped+=("$2 (SKIP)")
		return 1
	fi
	[ "$((deadline - $(date +%s) - 20))" -ge "$1" ] && return 0
	echo "skipped: $2 ($((deadline - $(date +%s))) s left)"
	skipped+=("$2")
	return 1
}

step "unpack and device"
if [ -f build/devpack.txz ]; then tar -xJf build/devpack.txz -C build || failed+=(unpack); fi
{
	echo "build: $(tr '\n' ' ' <"$bin/BUILD_INFO" 2>/dev/null || echo '(no BUILD_INFO)')"
	nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
	python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
} 2>&1 | tee "$out/device.txt" || failed+=(nvidia-smi)

# The checkpoints (2-layer 8B shape, ~3.1 GB; whole 1B shape, ~2.5 GB): in RAM when /dev/shm has
# room, else on disk.
root=${TMPDIR:-/tmp}
if [ "$(df --output=avail -B1G /dev/shm 2>/dev/null | tail -1 | tr -d ' ')" -ge 12 ] 2>/dev/null; then
	root=/dev/shm
fi
hfdir=$root/tiller-hf-8b-2l
hf1b=$root/tiller-hf-1b
rm -rf "$hfdir" "$hf1b"
step "HF reference checkpoints and PyTorch autograd's gradients and AtP, in the background (log: hf-logits.log; $hfdir, $hf1b)"
(
	timeout 75 python3 bench/gpubench/hf_logits.py --config "$bin/llama-3.1-8b-config.json" --layers 2 --tokens 32 --out "$hfdir" &&
		timeout 60 python3 bench/gpubench/hf_attrib.py reference --checkpoint "$hfdir" --pairs 8 --tokens 64 &&
		timeout 75 python3 bench/gpubench/hf_logits.py --config "$bin/llama-3.2-1b-config.json" --layers 16 --tokens 32 --out "$hf1b" &&
		timeout 60 python3 bench/gpubench/hf_attrib.py reference --checkpoint "$hf1b" --pairs 8 --tokens 64
) >"$out/hf-logits.log" 2>&1 &
hfpid=$!

step "the Hopper prefill GEMM (wgmma + TMA) against mma.sync and the CPU, first (log: gpu-test.log)"
# It is the default product of prefill on compute capability 9.0 and has never run on a card: when
# its test fails or hangs, every later step runs the mma.sync GEMM (TILLER_GPU_GEMM=pipe), so that
# an unverified kernel cannot decide the attribution checks or the benchmarks.
: >"$out/gpu-test.log"
echo "-- go test -run 'TestGEMMWGMMA'" | tee -a "$out/gpu-test.log"
(cd gpu && timeout 45 "../$bin/gpu.test" -test.v -test.run 'TestGEMMWGMMA' -test.timeout 40s) >>"$out/gpu-test.log" 2>&1
rc=$?
echo "   exit $rc"
if [ "$rc" != 0 ]; then
	export TILLER_GPU_GEMM=pipe
	failed+=("gpu tests TestGEMMWGMMA (exit $rc): the later steps run TILLER_GPU_GEMM=pipe")
fi

step "gpu tests: backward and attribution on the device, then conformance, kernels, fused decode kernels, whole model, the runner's decode steps (log: gpu-test.log)"
# Seven processes, so that a device fault (which ends its process: the context is lost) in one
# group still lets the others run. SyncEachOp names the op that faulted.
for group in 'TestBackwardConformance|TestExactMatMul' 'TestGradientsOnDevice|TestHooksOnGPU|TestAttributionOnGPU' \
	'TestConformance|TestGEMV|TestGEMMTensorCores|TestAttentionKernels|TestAttentionPrefillMMA|TestResidualRMSNorm|TestArgmax$|TestGraph' \
	'TestMatVec|TestAttentionDecodeRoPE|TestArgmaxAdvance|TestGEMMSmallBatch|TestSplitKParts' 'TestModel|TestDecoderSteered|TestRunnerSteeringOnDevice|TestGreedyBatchOnDevice' \
	'TestStepsAgainstOps|TestStepsDeterministic|TestBatchInvarianceOnDevice|TestBF16KVCacheOnDevice|TestNoCurrentContext'; do
	fits 30 "gpu tests $group" || continue
	echo "-- go test -run '$group'" | tee -a "$out/gpu-test.log"
	lim=$(limit 100)
	(cd gpu && timeout "$lim" "../$bin/gpu.test" -test.v -test.run "$group" -test.timeout "$((lim - 5))s") >>"$out/gpu-test.log" 2>&1
	rc=$?
	[ "$rc" = 0 ] || failed+=("gpu tests $group (exit $rc)")
	echo "   exit $rc"
done

step "HF logits at the Llama-3.1-8B shape, 2 layers; gradients and AtP against PyTorch and the CPU, 8B-shaped and 1B (log: hf-check.log, data: hf.jsonl)"
wait "$hfpid"
rc=$?
tail -n 5 "$out/hf-logits.log"
rm -f "$out/hf.jsonl"
if [ -f "$hfdir/reference.safetensors" ] && fits 60 "8B-shaped checks against HF/PyTorch"; then
	timeout "$(limit 150)" "$bin/gpubench" -hf "$hfdir" -grads "$hfdir" -attrib "$hfdir" -cpu-pairs 2 -verify 64 -out "$out/hf.jsonl" >"$out/hf-check.log" 2>&1
	rc2=$?
	grep -E '"what":"(hf_logits|grad_check|attrib_check|failed)"' "$out/hf-check.log" | cut -c1-300
	[ "$rc2" = 0 ] || failed+=("8B-shaped checks against HF/PyTorch (exit $rc2)")
fi
if [ -f "$hf1b/attrib_reference.safetensors" ] && fits 60 "1B checks against PyTorch"; then
	timeout "$(limit 120)" "$bin/gpubench" -grads "$hf1b" -attrib "$hf1b" -cpu-pairs 1 -verify 32 -out "$out/hf.jsonl" >>"$out/hf-check.log" 2>&1
	rc2=$?
	grep -E '"what":"(grad_check|attrib_check|failed)"' "$out/hf-check.log" | tail -n 3 | cut -c1-300
	[ "$rc2" = 0 ] || failed+=("1B checks against PyTorch (exit $rc2)")
fi
[ "$rc" = 0 ] || failed+=("hf_logits.py / hf_attrib.py reference (exit $rc)")

step "AtP at the Llama-3.1-8B shape, 40 pairs of 64 tokens: tiller, then PyTorch autograd (log: atp-bench.log, data: attrib.jsonl)"
rm -f "$out/attrib.jsonl"
: >"$out/atp-bench.log"
if fits 60 "gpubench -atp-bench"; then
	timeout "$(limit 120)" "$bin/gpubench" -config "$bin/llama-3.1-8b-config.json" -atp-bench -atp-pairs 40 -atp-tokens 64 -out "$out/attrib.jsonl" >>"$out/atp-bench.log" 2>&1
	rc=$?
	grep -E '"what":"(atp_forward|atp_bench|failed)"' "$out/atp-bench.log" | cut -c1-300
	[ "$rc" = 0 ] || failed+=("gpubench -atp-bench (exit $rc)")
fi
if fits 60 "hf_attrib.py bench"; then
	PYTHONUNBUFFERED=1 timeout "$(limit 150)" python3 bench/gpubench/hf_attrib.py bench --config "$bin/llama-3.1-8b-config.json" --pairs 40 --tokens 64 \
		--dtypes bf16,fp32 --out "$out/attrib.jsonl" >>"$out/atp-bench.log" 2>&1
	rc=$?
	grep -E '"what":"torch_atp' "$out/atp-bench.log" | cut -c1-300
	[ "$rc" = 0 ] || failed+=("hf_attrib.py bench (exit $rc)")
fi

step "tiller generate --device cuda against --device cpu, greedy, a tiny random model (log: generate.log)"
tiny=${TMPDIR:-/tmp}/tiller-tiny
rm -rf "$tiny" "$out/generate.jsonl"
fits 30 "tiller generate" && {
	"$bin/tiller" init --config cmd/tiller/testdata/tiny-config.json --out "$tiny" --seed 1 &&
		timeout 15 "$bin/tiller" generate --model "$tiny" --temperature 0 --max-tokens 24 "Hello there" >"$out/generate-cpu.txt" &&
		timeout 15 "$bin/tiller" generate --model "$tiny" --device cuda --temperature 0 --max-tokens 24 "Hello there" >"$out/generate-cuda.txt"
} >"$out/generate.log" 2>&1
rc=$?
if [ ! -s "$out/generate.log" ]; then
	:
elif [ "$rc" = 0 ]; then
	same=false
	cmp -s "$out/generate-cpu.txt" "$out/generate-cuda.txt" && same=true
	echo "{\"what\":\"generate\",\"same_as_cpu\":$same}" >"$out/generate.jsonl"
	echo "cuda and cpu text identical: $same"
else
	failed+=("tiller generate (exit $rc)")
fi
rm -rf "$tiny"

step "attribution and steering on the GPU, tiny-chat: attribute and eval --device cuda against cpu, derive and serve --device cuda (log: steer-gpu.log)"
sg=${TMPDIR:-/tmp}/tiller-steer-gpu
rm -rf "$sg"
mkdir -p "$sg/vectors"
fits 90 "attribution and steering on tiny-chat" && (
	export TILLER_CACHE="$sg/cache"
	for d in cpu cuda; do
		echo "-- attribute --device $d"
		timeout 60 "$bin/tiller" attribute --device "$d" --pairs llama/tinychat/demo/joy-attribution.jsonl --align right --star --verify 64 \
			--out "$sg/atp-$d" 2>&1 | grep -E '^(locus|time)' || exit 1
	done &&
		python3 - "$sg/atp-cpu/scores.json" "$sg/atp-cuda/scores.json" <<'PY' &&
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def walk(x, y, path, out):
    if isinstance(x, dict):
        for k in x:
            walk(x[k], (y or {}).get(k), path + "." + k, out)
    elif isinstance(x, list):
        for u, v in zip(x, y or []):
            walk(u, v, path, out)
    elif isinstance(x, float) and isinstance(y, float):
        out.append((abs(x - y), abs(x), path))
out = []
for k in ("clean_metric", "corrupt_metric", "mean", "per_pair"):  # every score, by method and kind
    walk(a[k], b[k], k, out)
scale, worst = max(s for _, s, _ in out), max(out)
print(f"attribute --device cuda vs cpu, tiny-chat: {len(out)} numbers, max |diff| {worst[0]:.3g} at {worst[2]} "
      f"(largest {scale:.3g}: relative {worst[0] / scale:.2e}, bound 1e-4)")
sys.exit(worst[0] > 1e-4 * scale)
PY
		"$bin/tiller" derive --device cuda --pairs llama/tinychat/demo/joy-pairs.jsonl --locus "$sg/atp-cuda/locus.json" --out "$sg/vectors/joy.safetensors" &&
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
if [ -f "$out/steer-gpu.log" ]; then
	grep -E '^(-- |0 |0\.4 |\{"choices|\{"error|attribute --device)' "$out/steer-gpu.log" | cut -c1-220
	[ "$rc" = 0 ] || failed+=("attribution and steering on the GPU (exit $rc)")
	grep -q '"choices"' "$out/steer-gpu.log" || failed+=("tiller serve --device cuda answered no completion")
fi
rm -rf "$sg"

step "gpubench: copy peak, GEMVs, decode forms and their profiles, decode through the runner, prefill, 64 rows (log: gpubench.log, data: tiller.jsonl)"
rm -f "$out/tiller.jsonl"
if fits 100 "gpubench (decode, prefill, kernels)"; then
	timeout "$(limit 160)" "$bin/gpubench" -config "$bin/llama-3.1-8b-config.json" -out "$out/tiller.jsonl" -cpuprofile "$out/batch-cpu.pprof" >"$out/gpubench.log" 2>&1
	rc=$?
	grep -E '"what":"(tiller_decode_b1|tiller_runner_b1|tiller_prefill|tiller_generate_batch|failed|done)"' "$out/gpubench.log" | cut -c1-300
	[ "$rc" = 0 ] || failed+=("gpubench (exit $rc)")
fi

step "tiller profile: a tiny fixture, and the 2-layer 8B-shaped checkpoint (log: profile.log, data: profile.jsonl)"
rm -f "$out/profile.jsonl"
: >"$out/profile.log"
for m in llama/testdata/hf/llama32 "$hfdir"; do
	[ -d "$m" ] || continue
	fits 20 "tiller profile $m" || continue
	timeout "$(limit 30)" "$bin/tiller" profile --model "$m" --tokens 8 --step both --json "$out/profile.jsonl" >>"$out/profile.log" 2>&1
	rc=$?
	[ "$rc" = 0 ] || failed+=("tiller profile $m (exit $rc)")
done

rm -rf "$hfdir" "$hf1b"

if [ "${HF_BASELINE:-1}" = 1 ] && fits 60 "HF transformers baseline"; then
	step "HF transformers at the same shape: prefill, batch-1 decode, 64 rows static cache eager then compiled (log: hf.log, data: hf-baseline.jsonl)"
	rm -f "$out/hf-baseline.jsonl"
	lim=$(limit 240)
	# The deadline stops hf_baseline.py between measurements (the compiled 64 rows last); the
	# timeout is the backstop, and what was measured by then is in hf-baseline.jsonl already.
	timeout "$lim" python3 bench/peers/hf_baseline.py --quick --batch64 --deadline-s "$((lim - 60))" --config "$bin/llama-3.1-8b-config.json" \
		--out "$out/hf-baseline.jsonl" 2>&1 | tail -n 20 >"$out/hf.log"
	rc=${PIPESTATUS[0]}
	grep -E '"what":"(hf_prefill|hf_decode_b1|hf_generate|failed|skipped)"' "$out/hf.log" | cut -c1-300
	[ "$rc" = 0 ] || [ "$rc" = 124 ] || failed+=("hf baseline (exit $rc)")
	[ "$rc" = 124 ] && echo "hf baseline: stopped at the budget (what it measured is kept)"
fi

step "results (table: table.md)"
{
	cat "$out/device.txt"
	echo
	python3 scripts/device-table.py "$out"
	echo
	echo "gpu tests:"
	grep -E '^(--- (FAIL|SKIP)|FAIL|panic:)' "$out/gpu-test.log" | head -n 20
	echo "$(grep -c '^--- PASS' "$out/gpu-test.log") tests passed, $(grep -c '^--- FAIL' "$out/gpu-test.log") failed, $(grep -c '^--- SKIP' "$out/gpu-test.log") skipped"
	echo "wall: $(($(date +%s) - t0)) s of a budget of ${BUDGET_S:-540} s"
	[ ${#skipped[@]} -gt 0 ] && printf 'SKIPPED (budget): %s\n' "${skipped[@]}"
	[ ${#failed[@]} -gt 0 ] && printf 'FAILED: %s\n' "${failed[@]}"
} >"$out/table.md" 2>&1
cat "$out/table.md"
# Every text file names the build, the card and the driver in its first line (a JSON line, which
# readers of the JSON lines skip as an unknown "what").
stamp=$(printf '{"what":"build","commit":"%s","card_driver":"%s"}' "$(head -n 1 "$bin/BUILD_INFO" 2>/dev/null)" \
	"$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)")
for f in "$out"/*.log "$out"/*.jsonl "$out"/*.txt "$out"/*.md; do
	[ -f "$f" ] && { echo "$stamp"; cat "$f"; } >"$f.stamped" && mv "$f.stamped" "$f"
done
# At most 8 files come back from the device machine: the table, the test log, and every other log
# and JSON line in one archive.
(cd "$out" && tar -czf raw.tgz --exclude raw.tgz --exclude table.md --exclude gpu-test.log . &&
	find . -maxdepth 1 -type f ! -name raw.tgz ! -name table.md ! -name gpu-test.log -delete)
if [ ${#failed[@]} -gt 0 ]; then
	printf 'FAILED: %s\n' "${failed[@]}"
	exit 1
fi
echo "device check: all steps passed"

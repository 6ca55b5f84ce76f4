#!/usr/bin/env bash
# The CPU peer of DESIGN.md's Performance table: llama.cpp decoding a random-weight
# Llama-3.2-1B-shaped checkpoint (or the model in $MODEL) in bf16 on this machine, measured with
# llama-bench.
#
# Usage: bench/peers/llamacpp.sh [LLAMA_CPP_SOURCE_DIR]
#
# Every step is skipped when its output is already there, so a second run only measures:
#   1. llama.cpp's source: the directory given as the argument or in $LLAMA_CPP (a checkout of
#      ggml-org/llama.cpp). With neither, pip downloads the source distribution of the PyPI
#      package llama-cpp-python (pinned below), which carries llama.cpp's source under
#      vendor/llama.cpp, and unpacks it under build/peers/.
#   2. llama-bench and llama-quantize, built with cmake into build/peers/llama.cpp-<commit>:
#      Release, CPU only, -march=native (GGML_NATIVE), no network support (LLAMA_OPENSSL off).
#   3. the checkpoint: $MODEL when set, else a random one written by `bin/tiller init` (all 16
#      layers, bf16, seed 1, the Llama 3 tokenizer from shared/) into build/peers/llama-3.2-1b-random
#      (2.5 GB).
#   4. its bf16 GGUF, build/peers/<name>-bf16.gguf. A GGUF file in $MODEL (a quantized one, say) is
#      widened by llama-quantize --allow-requantize ... BF16, which keeps its tokenizer and
#      metadata; a Hugging Face folder is converted by llama.cpp's convert_hf_to_gguf.py
#      --outtype bf16 (2.5 GB for the random checkpoint). The
#      converter imports torch, transformers and sentencepiece: it runs in build/peers/venv, a
#      small virtualenv that sees the packages of the project's pinned reference environment
#      build/pyref (built here the way scripts/reference/make_fixtures.sh builds it, if missing)
#      and adds only sentencepiece.
#   5. llama-bench: tg128 (decode 128 tokens, -p 0 -n 128) and pp512 (prefill 512 tokens,
#      -p 512 -n 0) at each thread count in $THREADS, $REPS repetitions each, then the effective
#      weight bandwidth of decode (all weight bytes are read once per token; the tied embedding
#      is stored once, as the LM head, and its row lookup is negligible), and the machine's own
#      memory bandwidth from `go test ./bench -bench Memory` before and after, for comparison.
#      A warning is printed when other processes keep the machine busy before a test.
#
# Everything is written under build/peers/ (git-ignored). Raw llama-bench rows (JSON lines) are
# appended to build/peers/results/llamacpp-<date>.jsonl.
#
# Environment:
#   LLAMA_CPP   llama.cpp source directory (the argument wins)
#   MODEL       the model to measure: a Hugging Face folder or a GGUF file (default: the random
#               Llama-3.2-1B-shaped checkpoint of step 3)
#   MEASURE     0 stops after step 4 and prints `llama_bench=PATH` and `gguf=PATH` on stdout, for
#               scripts that run llama-bench themselves (bench/peers/cpu_compare.py)
#   THREADS     thread counts to measure (default "1 2")
#   REPS        llama-bench repetitions (default 5)
#   MEMBENCH    0 skips the Go memory benchmark (default 1)
#   SHARED      the shared/ folder (default: ../shared beside the repository)
#   PYTHON      the python3 this script runs pip download, a new build/pyref and its summary
#               with (default python3)
#
# Decode speed on a shared 2-core VM is noisy from repetition to repetition: the table's ± and
# the per-repetition min/max printed after it show how much.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
out=build/peers
shared=${SHARED:-$repo/../shared}
threads=${THREADS:-1 2}
reps=${REPS:-5}
# The llama-cpp-python release whose source distribution is used when no llama.cpp directory is
# given; its CHANGELOG names the llama.cpp commit it carries (0.3.36: ggml-org/llama.cpp@0c1e57098).
llama_cpp_python=0.3.36
mkdir -p "$out/results"

log() { echo "llamacpp.sh: $*" >&2; }

# busy prints how much of the machine other processes kept busy over the last second: the
# measurements are only as good as the machine is idle (2 cores; one other busy process halves
# the 2-thread decode figure).
busy() {
	local -a x y
	local all=0 idle i
	read -ra x </proc/stat # cpu user nice system idle iowait irq softirq steal ...
	sleep 1
	read -ra y </proc/stat
	idle=$(((y[4] + y[5]) - (x[4] + x[5])))
	for i in 1 2 3 4 5 6 7 8; do all=$((all + y[i] - x[i])); done
	echo $((100 * (all - idle) / (all > 0 ? all : 1)))
}

# --- 1. llama.cpp's source and the commit it is at ------------------------------------------
src=${1:-${LLAMA_CPP:-}}
commit=unknown
if [ -z "$src" ]; then
	sdist_dir=$out/src/llama_cpp_python-$llama_cpp_python
	if [ ! -f "$sdist_dir/vendor/llama.cpp/CMakeLists.txt" ]; then
		log "downloading the llama-cpp-python $llama_cpp_python source distribution from PyPI"
		mkdir -p "$out/src"
		"${PYTHON:-python3}" -m pip download --quiet --disable-pip-version-check --no-deps \
			--no-binary :all: -d "$out/src" "llama-cpp-python==$llama_cpp_python"
		rm -rf "$sdist_dir"
		tar -xzf "$out/src/llama_cpp_python-$llama_cpp_python.tar.gz" -C "$out/src"
		# vendor/llama.cpp was a git submodule: its .git file points at a directory that the
		# archive lacks.
		rm -f "$sdist_dir/vendor/llama.cpp/.git"
	fi
	src=$sdist_dir/vendor/llama.cpp
	# The first "update llama.cpp to ggml-org/llama.cpp@HASH" line under this release's heading.
	commit=$(sed -n "/^## \[$llama_cpp_python\]/,/^## \[/s/.*ggml-org\/llama\.cpp@\([0-9a-f]*\).*/\1/p" \
		"$sdist_dir/CHANGELOG.md" | head -n1)
	commit=${commit:-unknown}
elif git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	commit=$(git -C "$src" rev-parse --short=9 HEAD)
fi
src=$(cd "$src" && pwd)
[ -f "$src/CMakeLists.txt" ] && [ -f "$src/convert_hf_to_gguf.py" ] ||
	{ log "$src does not look like a llama.cpp source tree"; exit 1; }
log "llama.cpp source: $src (commit $commit)"

# --- 2. llama-bench ---------------------------------------------------------------------------
bld=$out/llama.cpp-$commit
bench=$bld/bin/llama-bench
if [ ! -x "$bench" ]; then
	log "building llama-bench in $bld (about 5 minutes on 2 cores)"
	gen=()
	command -v ninja >/dev/null && gen=(-G Ninja)
	# GIT_CEILING_DIRECTORIES keeps the build-info step's git calls inside $src: a source tree
	# without .git (the PyPI one, which sits inside this repository) would otherwise report
	# tiller's commit and commit count as llama.cpp's and ggml's.
	GIT_CEILING_DIRECTORIES=$(dirname "$src") cmake -S "$src" -B "$bld" "${gen[@]}" \
		-DCMAKE_BUILD_TYPE=Release \
		-DGGML_NATIVE=ON \
		-DLLAMA_OPENSSL=OFF \
		-DLLAMA_BUILD_TESTS=OFF \
		-DLLAMA_BUILD_SERVER=OFF \
		-DLLAMA_BUILD_COMMIT="${commit:0:7}" >"$bld.cmake.log"
fi
if [ ! -x "$bench" ] || [ ! -x "$bld/bin/llama-quantize" ]; then
	cmake --build "$bld" --target llama-bench llama-quantize -j "$(nproc)" >"$bld.build.log"
fi

# --- 3. the random-weight checkpoint -----------------------------------------------------------
model=${MODEL:-$out/llama-3.2-1b-random}
model=${model%/}
if [ -z "${MODEL:-}" ] && [ ! -f "$model/model.safetensors" ]; then
	[ -x bin/tiller ] || make tiller
	log "writing the random checkpoint $model"
	rm -rf "$model.tmp"
	bin/tiller init \
		--config "$repo/llama/testdata/configs/llama-3.2-1b-instruct/config.json" \
		--tokenizer "$shared/tokenizers/llama3/tokenizer.json" \
		--dtype bf16 --seed 1 --out "$model.tmp" >"$out/tiller-init.log" 2>&1
	mv "$model.tmp" "$model"
fi

# --- 4. the GGUF ------------------------------------------------------------------------------
name=$(basename "$model" .gguf)
gguf=$out/$name-bf16.gguf
[ -e "$model" ] || { log "$model: no such model folder or GGUF file"; exit 1; }
if [ ! -f "$gguf" ] && [ -f "$model" ]; then
	log "widening $model to $gguf"
	"$bld/bin/llama-quantize" --allow-requantize "$model" "$gguf.tmp" BF16 >"$out/quantize.log" 2>&1 ||
		{ tail -20 "$out/quantize.log" >&2; exit 1; }
	mv "$gguf.tmp" "$gguf"
fi
if [ ! -f "$gguf" ]; then
	pyref=build/pyref
	req=scripts/reference/requirements.txt
	if [ ! -x "$pyref/bin/python" ] ||
		[ "$(cat "$pyref/requirements.sha256" 2>/dev/null)" != "$(sha256sum "$req" | cut -d' ' -f1)" ]; then
		# The same recipe and stamp as scripts/reference/make_fixtures.sh, so either script
		# accepts the environment the other built.
		log "building $pyref from $req (about 2.4 GB to download, 4.3 GB on disk)"
		rm -rf "$pyref"
		"${PYTHON:-python3}" -m venv "$pyref"
		"$pyref/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: -r "$req"
		sha256sum "$req" | cut -d' ' -f1 >"$pyref/requirements.sha256"
	fi
	venv=$out/venv
	if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sentencepiece, torch' 2>/dev/null; then
		log "building $venv (build/pyref's packages plus sentencepiece)"
		rm -rf "$venv"
		# Created by build/pyref's interpreter, so that the Python versions match; a .pth file
		# puts build/pyref's site-packages on its path without changing build/pyref.
		"$pyref/bin/python" -m venv "$venv"
		pyref_site=$("$pyref/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
		venv_site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
		echo "$pyref_site" >"$venv_site/pyref.pth"
		# The Llama converter calls sentencepiece first (it fails over to the BPE tokenizer.json
		# only when tokenizer.model is missing), so the module must exist.
		"$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: sentencepiece==0.2.3
	fi
	log "converting to $gguf"
	# The converter checks the tokenizer's pre-tokenizer against the ones it knows and stops if
	# it is unknown; the Llama 3 tokenizer in shared/ is recognized as llama-bpe.
	"$venv/bin/python" "$src/convert_hf_to_gguf.py" "$model" --outtype bf16 \
		--outfile "$gguf.tmp" >"$out/convert.log" 2>&1 || { tail -20 "$out/convert.log" >&2; exit 1; }
	mv "$gguf.tmp" "$gguf"
fi

if [ "${MEASURE:-1}" = 0 ]; then
	echo "llama_bench=$repo/$bench"
	echo "gguf=$repo/$gguf"
	exit 0
fi

# --- 5. measurements ----------------------------------------------------------------------------
# membench prints this machine's memory bandwidth from tiller's own Go benchmark (bench/
# memory_test.go): reads with one and four streams per core, and a copy.
membench() {
	[ "${MEMBENCH:-1}" != 0 ] || return 0
	echo "== this machine's memory bandwidth (go test ./bench -bench Memory), $1"
	go test ./bench -run '^$' -bench Memory -benchtime 10x 2>&1 | grep -E '^Benchmark|FAIL' ||
		log "the memory benchmark did not run"
}

results=$out/results/llamacpp-$(date -u +%Y-%m-%d).jsonl
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
echo "== $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores; llama.cpp $commit"
membench "before llama-bench"
for t in $threads; do
	for test in "-p 0 -n 128" "-p 512 -n 0"; do
		b=$(busy)
		[ "$b" -lt 10 ] || log "warning: the machine was ${b}% busy just before this test (other processes)"
		# The table goes to stdout; -oe jsonl writes the same rows to stderr as JSON lines.
		# shellcheck disable=SC2086
		if ! "$bench" -m "$gguf" -t "$t" $test -r "$reps" -o md -oe jsonl 2>>"$rows"; then
			tail -20 "$rows" >&2
			exit 1
		fi
	done
done
grep '^{' "$rows" >>"$results" || true
"${PYTHON:-python3}" - "$rows" <<'PY'
import json, sys
print("== effective weight bandwidth of decode: model bytes x tokens/s")
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r["n_gen"] == 0:
        continue
    gb = r["model_size"] / 1e9
    lo, hi = min(r["samples_ts"]), max(r["samples_ts"])
    print(f"threads {r['n_threads']}: tg{r['n_gen']} {r['avg_ts']:.2f} tok/s x {gb:.3f} GB"
          f" = {r['avg_ts'] * gb:.1f} GB/s (repetitions {lo:.2f}..{hi:.2f} tok/s"
          f" = {lo * gb:.1f}..{hi * gb:.1f} GB/s)")
PY
log "raw rows appended to $results"

# The memory bandwidth again: the host's other tenants can move both figures between runs (seen:
# the memory read ceiling at 24 GB/s in one run, 40 in another), so only figures measured in the
# same run are compared, and the pair shows whether the machine changed during this one.
membench "after llama-bench"

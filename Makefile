# tiller — build, test and demo. `make demo` and `make test` work on a fresh machine with Go and
# Rust installed; nothing else is downloaded but Go modules and Rust crates.

GO        ?= go
BUILD     := build
TOKLIB    := $(BUILD)/tokenizers/libtokenizers.a
TOKENIZERS_VERSION := v1.22.1

# daulet/tokenizers links -ltokenizers; this says where the library we build lives.
export CGO_LDFLAGS := -L$(CURDIR)/$(BUILD)/tokenizers
export CGO_ENABLED := 1

.PHONY: all tiller test vet demo fixtures bench clean

# The demo model: a tiny random checkpoint written by `tiller init` (the embedded trained model
# replaces it later).
DEMO_MODEL := $(BUILD)/demo/tiny-random

all: tiller

tiller: $(TOKLIB)
	$(GO) build -o bin/tiller ./cmd/tiller

$(TOKLIB):
	scripts/build-tokenizers.sh $(TOKENIZERS_VERSION) $(BUILD)/tokenizers

vet: $(TOKLIB)
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting" >&2; exit 1; }

test: vet
	$(GO) test ./...

demo: tiller
	@test -f $(DEMO_MODEL)/model.safetensors || bin/tiller init --config cmd/tiller/testdata/tiny-config.json --out $(DEMO_MODEL) --seed 1
	@echo "== tiller inspect: a tiny random-weight Llama (GQA, Llama 3 RoPE scaling, byte-level tokenizer)"
	@bin/tiller inspect --model $(DEMO_MODEL) | head -7
	@echo "== tiller generate --chat: random weights, so the reply is noise; the point is the pipeline"
	bin/tiller generate --model $(DEMO_MODEL) --chat --max-tokens 40 --temperature 0.8 --seed 1 "Hello! How are you today?"
	@echo "== tiller score"
	bin/tiller score --model $(DEMO_MODEL) "Hello" | tail -1

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

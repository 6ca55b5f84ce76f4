package llama

import (
	"path/filepath"
	"strconv"
	"testing"

	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

// hfFixtures are the checkpoints scripts/reference/make_fixtures.py makes with HF transformers,
// each stressing one part of the model (see scripts/reference/README.md).
var hfFixtures = []string{"gqa", "llama3rope", "tied", "odd", "llama32"}

type hfReference struct {
	prefillIDs, decodeIDs       []int32
	prefillLogits, decodeLogits []float32
	promptLen                   int
}

func readReference(t *testing.T, dir string) hfReference {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, "reference.safetensors"))
	if err != nil {
		t.Fatalf("%v (regenerate with `make fixtures`)", err)
	}
	defer f.Close()
	get := func(name string) *tensor.Tensor {
		x, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		c := tensor.New(x.DType, x.Shape...)
		copy(c.Data, x.Data)
		return c
	}
	p, err := strconv.Atoi(f.Header.Metadata["prompt_len"])
	if err != nil {
		t.Fatalf("prompt_len metadata: %v", err)
	}
	return hfReference{
		prefillIDs: get("prefill.ids").I32(), prefillLogits: get("prefill.logits").F32(),
		decodeIDs: get("decode.ids").I32(), decodeLogits: get("decode.logits").F32(),
		promptLen: p,
	}
}

// The whole model against HF transformers in f32: logits at every position of a prefill, and of a
// short prefill followed by token-by-token decode through the KV cache. Both sides compute in f32
// with the same stored weights; the differences are summation order and the last bits of exp, cos
// and pow, which stay orders of magnitude under 1e-4 of the logit range (the bound).
func TestHFParity(t *testing.T) {
	for _, name := range hfFixtures {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", "hf", name)
			ref := readReference(t, dir)
			m, err := Load(dir, LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			r := newRunner(t, m, 2)
			vocab := m.Config.Vocab

			out, err := r.Forward(Prompt(0, ref.prefillIDs, 0, true), r.NewKVCache(len(ref.prefillIDs), 16), nil)
			if err != nil {
				t.Fatal(err)
			}
			closeRows(t, "prefill", out.F32(), ref.prefillLogits, 1e-4)

			kv := r.NewKVCache(len(ref.decodeIDs), 16)
			out, err = r.Forward(Prompt(0, ref.decodeIDs[:ref.promptLen], 0, true), kv, nil)
			if err != nil {
				t.Fatal(err)
			}
			rows := append([]float32(nil), out.F32()...)
			for p := ref.promptLen; p < len(ref.decodeIDs); p++ {
				out, err := r.Forward(Prompt(0, ref.decodeIDs[p:p+1], p, false), kv, nil)
				if err != nil {
					t.Fatal(err)
				}
				rows = append(rows, out.F32()...)
			}
			if len(rows) != len(ref.decodeIDs)*vocab {
				t.Fatalf("%d decode logits, want %d", len(rows), len(ref.decodeIDs)*vocab)
			}
			closeRows(t, "decode", rows, ref.decodeLogits, 1e-4)
		})
	}
}

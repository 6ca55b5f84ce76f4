package bench

import (
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// benchDecodeHooked times decode steps of the 1B shape with the hook set that setup makes (nil:
// the plain fast path), so hook overhead is measured against the same steps.
func benchDecodeHooked(b *testing.B, setup func(d hooks.Dims) *hooks.Set) {
	r := loadRunner(b, "llama-3.2-1b-instruct", 2)
	m := r.Model
	h := setup(m.Config.HookDims())
	prompt := []int32{128000, 9906, 11, 1268, 527, 499, 3432, 30}
	kv := r.NewKVCache(len(prompt)+b.N+1, 16)
	if _, err := r.Forward(llama.Prompt(0, prompt, 0, false), kv, h); err != nil {
		b.Fatal(err)
	}
	step := llama.Batch{Tokens: []int32{13}, Seq: []int32{0}, Pos: []int32{0}, Logits: []bool{true}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step.Pos[0] = int32(len(prompt) + i)
		if _, err := r.Forward(step, kv, h); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}

func BenchmarkDecodeHooksNone(b *testing.B) {
	benchDecodeHooked(b, func(hooks.Dims) *hooks.Set { return nil })
}

// An empty set: the cost of asking at every point.
func BenchmarkDecodeHooksEmpty(b *testing.B) {
	benchDecodeHooked(b, func(d hooks.Dims) *hooks.Set { return hooks.NewSet(d) })
}

func BenchmarkDecodeHooksSteerOneLayer(b *testing.B) {
	benchDecodeHooked(b, func(d hooks.Dims) *hooks.Set {
		h := hooks.NewSet(d)
		if err := h.Add("blocks.8.hook_resid_post", hooks.Steer{Vector: make([]float32, d.DModel), Alpha: 4}); err != nil {
			b.Fatal(err)
		}
		return h
	})
}

func BenchmarkDecodeHooksReadAllResidPost(b *testing.B) {
	benchDecodeHooked(b, func(d hooks.Dims) *hooks.Set {
		h := hooks.NewSet(d)
		if err := h.Read("blocks.*.hook_resid_post"); err != nil {
			b.Fatal(err)
		}
		return h
	})
}

// benchAnalysis times, on a 64-token prompt of the 1B shape in F32: a plain forward (all logits),
// a recorded forward, and a recorded forward plus the backward pass to every resid_pre, and
// reports the backward's cost as a multiple of the forward.
func benchAnalysis(b *testing.B, backward bool) {
	r := loadRunner(b, "llama-3.2-1b-instruct", 2)
	m := r.Model
	ids := make([]int32, 64)
	for i := range ids {
		ids[i] = int32((i*7919 + 13) % m.Config.Vocab)
	}
	batch := llama.Prompt(0, ids, 0, false)
	points, _ := hooks.Match("blocks.*.hook_resid_pre", m.Config.Layers)
	metric := llama.LogitDiff{Row: -1, A: 100, B: 200}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !backward {
			if _, err := r.Forward(batch, r.NewKVCache(len(ids), 16), nil); err != nil {
				b.Fatal(err)
			}
			continue
		}
		if _, _, err := r.Gradients(batch, metric, llama.GradOptions{Points: points}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m.Config.BytesPerToken(tensor.F32))/1e6, "recordMB/token")
}

func BenchmarkAnalysisForward64(b *testing.B)         { benchAnalysis(b, false) }
func BenchmarkAnalysisForwardBackward64(b *testing.B) { benchAnalysis(b, true) }

package llama

import (
	"slices"
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
)

// stepBackend is a CPU backend with decode steps: each Step checks the contract the runner
// promises (distinct sequences, logits at every row, additions only at StepPoints, no more rows
// than MaxRows), rebuilds the additions as a hook set of SeqAlpha strengths and runs the pass op
// by op on a runner of the bare CPU. So a run through it must give the plain runner's tokens bit
// for bit, and it counts the steps it took.
type stepBackend struct {
	*tensor.CPU
	t       *testing.T
	inner   *Runner
	maxRows int
	steps   int
	rows    int
	steered int
}

func (s *stepBackend) NewDecodeSteps(m *Model) (DecodeSteps, error) {
	s.inner = NewRunner(m, s.CPU)
	return s, nil
}

func (s *stepBackend) MaxRows() int { return s.maxRows }

func (s *stepBackend) Step(b Batch, kv *tensor.KVCache, steer []PointTerms) (*tensor.Tensor, error) {
	t := s.t
	n := len(b.Tokens)
	if n == 0 || n > s.maxRows || len(b.Seq) != n || len(b.Pos) != n {
		t.Fatalf("step of %d tokens, %d sequences, %d positions (max %d rows)", n, len(b.Seq), len(b.Pos), s.maxRows)
	}
	for i := range b.Tokens {
		if b.Logits != nil && !b.Logits[i] || b.Logits == nil && n > 1 {
			t.Fatalf("step row %d asks for no logits", i)
		}
		if slices.Contains(b.Seq[:i], b.Seq[i]) {
			t.Fatalf("step with sequence %d twice", b.Seq[i])
		}
	}
	var h *hooks.Set
	if len(steer) > 0 {
		s.steered++
		h = hooks.NewSet(s.inner.Model.Config.HookDims())
	}
	for _, pt := range steer {
		if !StepPoints(pt.Point.Kind) {
			t.Fatalf("step adds at %s", pt.Point.Name())
		}
		for _, term := range pt.Terms {
			if len(term.Alpha) != n {
				t.Fatalf("%s: %d strengths for %d rows", pt.Point.Name(), len(term.Alpha), n)
			}
			alpha := map[int32]float32{}
			for i, a := range term.Alpha {
				alpha[b.Seq[i]] = a
			}
			if err := h.AddAt(pt.Point, hooks.Steer{Vector: term.Vector, SeqAlpha: alpha}); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.steps++
	s.rows += n
	all := Batch{Tokens: b.Tokens, Seq: b.Seq, Pos: b.Pos, Logits: make([]bool, n)}
	for i := range all.Logits {
		all.Logits[i] = true
	}
	return s.inner.Forward(all, kv, h)
}

func newStepRunner(t *testing.T, m *Model, maxRows int) (*Runner, *stepBackend) {
	b := &stepBackend{CPU: tensor.NewCPU(2), t: t, maxRows: maxRows}
	t.Cleanup(b.CPU.Close)
	return NewRunner(m, b), b
}

// Generate and GenerateBatch through a backend's decode steps give the op-by-op runner's tokens:
// every decode step goes to the steps (steered or not, greedy or sampled), prefill never does,
// batches larger than MaxRows and hook sets that read or add elsewhere run op by op.
func TestDecodeStepsRoute(t *testing.T) {
	m, _ := tinyModel(t, tensor.F32, nil)
	plain := newRunner(t, m, 2)
	fast, sb := newStepRunner(t, m, 3)

	opts := GenerateOptions{MaxTokens: 12, Stop: []int32{}}
	var want, got []int32
	stPlain, err := plain.Generate(prompt, opts, func(id int32) bool { want = append(want, id); return true })
	if err != nil {
		t.Fatal(err)
	}
	stFast, err := fast.Generate(prompt, opts, func(id int32) bool { got = append(got, id); return true })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Generate through decode steps: %v, op by op: %v", got, want)
	}
	if sb.steps != stFast.DecodeSteps || sb.steps != stPlain.DecodeSteps || sb.rows != sb.steps {
		t.Fatalf("%d steps of %d rows for %d decode steps", sb.steps, sb.rows, stFast.DecodeSteps)
	}

	dims := m.Config.HookDims()
	vec := make([]float32, m.Config.Dim)
	for i := range vec {
		vec[i] = float32(i%7) - 3
	}
	steered := func(extra func(*hooks.Set)) *hooks.Set {
		h := hooks.NewSet(dims)
		if err := h.Add("blocks.0.hook_resid_post", hooks.Steer{Vector: vec, SeqAlpha: map[int32]float32{0: 0.5, 2: -1}}); err != nil {
			t.Fatal(err)
		}
		if err := h.Add("blocks.1.hook_attn_out", hooks.Steer{Vector: vec, Alpha: 0.25, Where: hooks.Where{Positions: []int32{12, 13, 14}}}); err != nil {
			t.Fatal(err)
		}
		if extra != nil {
			extra(h)
		}
		return h
	}
	seqs := func(sampled bool) []Sequence {
		var out []Sequence
		for i, p := range [][]int32{prompt, prompt[3:], prompt[1:6]} {
			s := Sequence{Prompt: p, MaxTokens: 6 + i, Stop: []int32{}}
			if sampled {
				s.Sampler = SamplerConfig{Temperature: 0.8, TopK: 20, Seed: uint64(i)}
			}
			out = append(out, s)
		}
		return out
	}
	cases := []struct {
		name    string
		hooks   func() *hooks.Set
		sampled bool
		routed  bool
	}{
		{"greedy, unsteered", func() *hooks.Set { return nil }, false, true},
		{"sampled, steered at resid_post and attn_out", func() *hooks.Set { return steered(nil) }, true, true},
		{"greedy, steered", func() *hooks.Set { return steered(nil) }, false, true},
		{"a read beside the additions", func() *hooks.Set {
			return steered(func(h *hooks.Set) {
				if err := h.Read("blocks.1.hook_resid_pre"); err != nil {
					t.Fatal(err)
				}
			})
		}, false, false},
		{"an addition at hook_q", func() *hooks.Set {
			return steered(func(h *hooks.Set) {
				if err := h.Add("blocks.1.attn.hook_q", hooks.Steer{Vector: make([]float32, dims.Width(hooks.Point{Layer: 1, Kind: hooks.Q})), Alpha: 1}); err != nil {
					t.Fatal(err)
				}
			})
		}, true, false},
	}
	for _, c := range cases {
		sb.steps, sb.steered = 0, 0
		want, stw, err := plain.GenerateBatch(seqs(c.sampled), BatchOptions{Decode: c.hooks()})
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := fast.GenerateBatch(seqs(c.sampled), BatchOptions{Decode: c.hooks()})
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if !slices.Equal(got[i].Tokens, want[i].Tokens) {
				t.Errorf("%s: sequence %d through decode steps %v, op by op %v", c.name, i, got[i].Tokens, want[i].Tokens)
			}
		}
		if c.routed && sb.steps != stw.DecodeSteps {
			t.Errorf("%s: %d of %d decode steps went to the steps", c.name, sb.steps, stw.DecodeSteps)
		}
		if !c.routed && sb.steps != 0 {
			t.Errorf("%s: %d steps went to the steps, want none", c.name, sb.steps)
		}
		if c.routed && c.hooks() != nil && sb.steered == 0 {
			t.Errorf("%s: no step carried the additions", c.name)
		}
	}

	// Four rows exceed MaxRows (3): those steps run op by op, the rest through the steps.
	sb.steps = 0
	four := append(seqs(false), Sequence{Prompt: prompt[2:], MaxTokens: 2, Stop: []int32{}})
	if _, st, err := fast.GenerateBatch(four, BatchOptions{}); err != nil {
		t.Fatal(err)
	} else if sb.steps == 0 || sb.steps >= st.DecodeSteps {
		t.Errorf("4 rows with MaxRows 3: %d of %d decode steps went to the steps", sb.steps, st.DecodeSteps)
	}
}

//go:build cuda

package gpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

// Steered greedy decoding with the device-resident Decoder against the CPU runner given the same
// hooks.Steer adds: at hook_resid_pre of layer 0 (folded into the first norm), hook_resid_post of
// layer 1 and hook_resid_pre of layer 2 (one boundary: the two adds accumulate), and
// hook_resid_post of the last layer (folded into the final norm before the LM head), in every
// form of the step. Then ClearSteering, and the unsteered tokens again (the graph is recaptured
// without the steering operands). Everything is f32 on both sides (one token per step), so the
// logits meet the decode bound of TestModel*, 1e-4 of their range.
func TestDecoderSteered(t *testing.T) {
	b := newBackend(t)
	b.SyncEachOp = false
	m := randomModel(t, 9)
	c := m.Config
	cpu := tensor.NewCPU(2)
	defer cpu.Close()
	rc, rg := llama.NewRunner(m, cpu), llama.NewRunner(m, b)
	rng := rand.New(rand.NewPCG(16, 16))
	adds := []struct {
		p     hooks.Point
		alpha float32
	}{
		{hooks.Point{Layer: 0, Kind: hooks.ResidPre}, 2.5},
		{hooks.Point{Layer: 1, Kind: hooks.ResidPost}, -3},
		{hooks.Point{Layer: 2, Kind: hooks.ResidPre}, 0.75},
		{hooks.Point{Layer: c.Layers - 1, Kind: hooks.ResidPost}, 1.5},
	}
	vecs := make([][]float32, len(adds))
	set := hooks.NewSet(c.HookDims())
	for i, a := range adds {
		vecs[i] = make([]float32, c.Dim)
		for k := range vecs[i] {
			vecs[i][k] = float32(0.05 * rng.NormFloat64())
		}
		if err := set.Add(a.p.Name(), hooks.Steer{Vector: vecs[i], Alpha: a.alpha}); err != nil {
			t.Fatal(err)
		}
	}
	prompt := make([]int32, 9)
	for i := range prompt {
		prompt[i] = int32((i*53 + 7) % c.Vocab)
	}
	const steps = 12
	start := len(prompt)

	// The CPU: the prompt unsteered, then one token per step with the set (or without).
	cpuRun := func(h *hooks.Set) (tokens []int32, margins []float64, last []float32) {
		kv := rc.NewKVCache(64, 16)
		if _, err := rc.Forward(llama.Prompt(0, prompt[:start-1], 0, false), kv, nil); err != nil {
			t.Fatal(err)
		}
		tok := prompt[start-1]
		for s := 0; s < steps; s++ {
			logits, err := rc.Forward(llama.Prompt(0, []int32{tok}, start-1+s, false), kv, h)
			if err != nil {
				t.Fatal(err)
			}
			last = append([]float32(nil), logits.F32()...)
			margins = append(margins, margin(last))
			tok = argmax(last)
			tokens = append(tokens, tok)
		}
		return tokens, margins, last
	}
	steered, steeredMargins, steeredLast := cpuRun(set)
	plain, plainMargins, plainLast := cpuRun(nil)
	if closeEnough(steeredLast, plainLast, 1e-3) {
		t.Fatalf("the steering adds hardly move the CPU's logits: the test would not see them")
	}

	check := func(what string, d *Decoder, want []int32, margins []float64, last []float32) {
		t.Helper()
		if err := d.Start(prompt[start-1], start-1); err != nil {
			t.Fatal(err)
		}
		for s := 0; s < steps; s++ {
			if err := d.Step(); err != nil {
				t.Fatal(err)
			}
		}
		got := d.Tokens(start, start+steps)
		for s := range got {
			if got[s] != want[s] {
				if margins[s] < 1e-4*maxAbs(last) {
					t.Logf("%s step %d: token %d, CPU %d, a near-tie (margin %g)", what, s, got[s], want[s], margins[s])
					return
				}
				t.Errorf("%s: greedy tokens %v, CPU %v (first difference at step %d)", what, got, want, s)
				return
			}
		}
		closeLogits(t, what+": logits of the last step", d.Logits(), last, 1e-4)
	}
	for _, v := range []struct{ fused, pdl, graph bool }{{false, false, true}, {true, false, false}, {true, false, true}, {true, true, true}} {
		if v.fused && b.cc < 90 {
			continue
		}
		what := fmt.Sprintf("steered decoder (fused %v, pdl %v, graph %v)", v.fused, v.pdl, v.graph)
		kvg := rg.NewKVCache(64, 16)
		if _, err := rg.Forward(llama.Prompt(0, prompt[:start-1], 0, false), kvg, nil); err != nil {
			t.Fatal(err)
		}
		d, err := NewDecoder(b, rg.Model, kvg, 0, 48)
		if err != nil {
			t.Fatal(err)
		}
		d.UseGraph, d.Fused, d.PDL = v.graph, v.fused, v.pdl
		for i, a := range adds {
			if err := d.Steer(a.p, vecs[i], a.alpha); err != nil {
				t.Fatal(err)
			}
		}
		check(what, d, steered, steeredMargins, steeredLast)
		d.ClearSteering()
		check(what+", then ClearSteering", d, plain, plainMargins, plainLast)
		d.Close()
	}
}

// closeEnough reports whether every |got − want| is within rel of max |want|.
func closeEnough(got, want []float32, rel float64) bool {
	bound := rel * maxAbs(want)
	for i := range got {
		if d := float64(got[i] - want[i]); d > bound || -d > bound {
			return false
		}
	}
	return true
}

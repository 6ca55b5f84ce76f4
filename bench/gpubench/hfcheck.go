//go:build cuda

package main

import (
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/safetensors"
)

// Bounds of the HF comparison, relative to max |logit| of HF's float32 run of the same bf16
// weights (upcast exactly). Tiller's prefill of more than 8 tokens rounds activations to bf16 for
// the tensor cores (2⁻⁹ relative per element), as HF's own bf16 run rounds everything, and the
// decode steps that follow attend over the keys and values that prefill wrote, so they inherit
// its rounding: both are held to bf16 tolerance, 3e-2 (HF's own bf16 run differs from its f32 one
// by 1.7e-2 at this shape; the first device run measured tiller at 8.3e-3 for prefill and 6.1e-3
// for decode). A wrong index or a missed write gives errors of order 1.
const (
	hfDecodeBound  = 3e-2
	hfPrefillBound = 3e-2
)

// hfCheck loads the checkpoint in dir (hf_logits.py wrote it, with HF transformers' logits for
// fixed token ids in dir/reference.safetensors: ids (n) I32, logits_fp32 and logits_bf16 (n,
// vocab) F32), and compares tiller's logits on the GPU with HF's float32 ones: a prefill with
// logits at every position (tensor-core GEMMs), the runner decoding the last tokens one at a time
// (GEMV path), and the device-resident decoder, generic and fused, fed the same tokens.
func hfCheck(b *gpu.Backend, dir string) error {
	t0 := time.Now()
	ref, err := safetensors.Open(filepath.Join(dir, "reference.safetensors"))
	if err != nil {
		return err
	}
	defer ref.Close()
	idsT, err := ref.Tensor("ids")
	if err != nil {
		return err
	}
	fp32, err := ref.Tensor("logits_fp32")
	if err != nil {
		return err
	}
	bf16, err := ref.Tensor("logits_bf16")
	if err != nil {
		return err
	}
	ids := idsT.I32()
	n := len(ids)
	m, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		return err
	}
	defer m.Close()
	c := m.Config
	vocab := c.Vocab
	if fp32.Numel() != n*vocab {
		return fmt.Errorf("reference logits %v for %d ids and a vocabulary of %d", fp32.Shape, n, vocab)
	}
	want := fp32.F32()
	row := func(i int) []float32 { return want[i*vocab : (i+1)*vocab] }
	r := llama.NewRunner(m, b)
	load := time.Since(t0).Seconds()
	res := map[string]any{"what": "hf_logits", "layers": c.Layers, "dim": c.Dim, "vocab": vocab, "tokens": n, "load_s": load}
	pass := true
	check := func(key string, rel, bound float64) {
		res[key] = rel
		if !(rel <= bound) {
			pass = false
			res[key+"_over_bound"] = bound
		}
	}

	// HF's own bf16 run against its float32 run: the size of a bf16 computation's error.
	res["hf_bf16_rel"], _ = relErr(bf16.F32(), want, vocab)

	// Prefill, logits at every position.
	kv := r.NewKVCache(n+16, 16)
	got, err := r.Forward(llama.Prompt(0, ids, 0, true), kv, nil)
	if err != nil {
		return err
	}
	rel, agree := relErr(got.F32(), want, vocab)
	check("prefill_rel", rel, hfPrefillBound)
	res["prefill_argmax_agree"] = agree

	// The runner decoding the last 3 tokens one by one after a prefill of the others.
	const tail = 3
	kv = r.NewKVCache(n+16, 16)
	if _, err := r.Forward(llama.Prompt(0, ids[:n-tail], 0, false), kv, nil); err != nil {
		return err
	}
	worst := 0.0
	for i := n - tail; i < n; i++ {
		got, err := r.Forward(llama.Prompt(0, ids[i:i+1], i, false), kv, nil)
		if err != nil {
			return err
		}
		e, _ := relErr(got.F32(), row(i), vocab)
		worst = math.Max(worst, e)
	}
	check("runner_decode_rel", worst, hfDecodeBound)

	// The device-resident decoder in each form, fed ids[i] at position i by Start.
	for _, v := range []struct {
		key        string
		fused, pdl bool
	}{{"decoder_generic_rel", false, false}, {"decoder_fused_rel", true, true}} {
		kv := r.NewKVCache(n+16, 16)
		if _, err := r.Forward(llama.Prompt(0, ids[:n-tail], 0, false), kv, nil); err != nil {
			return err
		}
		d, err := gpu.NewDecoder(b, r.Model, kv, 0, n+8)
		if err != nil {
			return err
		}
		if v.fused && !d.Fused {
			d.Close()
			continue
		}
		d.Fused, d.PDL = v.fused, v.pdl
		worst := 0.0
		for i := n - tail; i < n; i++ {
			if err := d.Start(ids[i], i); err != nil {
				d.Close()
				return err
			}
			if err := d.Step(); err != nil {
				d.Close()
				return err
			}
			e, _ := relErr(d.Logits(), row(i), vocab)
			worst = math.Max(worst, e)
		}
		if v.pdl {
			res["decoder_fused_pdl"] = d.PDL
		}
		d.Close()
		check(v.key, worst, hfDecodeBound)
	}
	res["pass"] = pass
	res["wall_s"] = time.Since(t0).Seconds()
	emit(res)
	if !pass {
		return fmt.Errorf("logits differ from HF transformers' beyond the bounds (decode %g, prefill %g): %v", hfDecodeBound, hfPrefillBound, res)
	}
	return nil
}

// relErr is max |got − want| / max |want| over all elements (+Inf on a NaN or a length
// mismatch), and the fraction of rows (of vocab values) whose argmax agrees.
func relErr(got, want []float32, vocab int) (float64, float64) {
	if len(got) != len(want) || len(want) == 0 || len(want)%vocab != 0 {
		return math.Inf(1), 0
	}
	var worst, scale float64
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d != d {
			return math.Inf(1), 0
		}
		worst = math.Max(worst, d)
		scale = math.Max(scale, math.Abs(float64(want[i])))
	}
	rows, agree := len(want)/vocab, 0
	for r := 0; r < rows; r++ {
		if argmaxOf(got[r*vocab:(r+1)*vocab]) == argmaxOf(want[r*vocab:(r+1)*vocab]) {
			agree++
		}
	}
	return worst / scale, float64(agree) / float64(rows)
}

func argmaxOf(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

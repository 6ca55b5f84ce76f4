//go:build cuda

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/llama"
)

// cudaRunner is a runner on GPU 0 with the model's weights uploaded; close frees the device.
func cudaRunner(m *llama.Model) (*llama.Runner, func(), error) {
	b, err := gpu.New()
	if err != nil {
		return nil, nil, err
	}
	return llama.NewRunner(m, b), b.Close, nil
}

// profile runs `tiller profile`: the model's decode step on the GPU, timed as one CUDA graph per
// step, then each of its kernels timed with events (gpu.Decoder.Profile), against the card's
// device-to-device copy bandwidth measured first.
func profile(o *profileOptions, stdout, stderr io.Writer) error {
	b, err := gpu.New()
	if err != nil {
		return err
	}
	defer b.Close()
	cfg, err := llama.ReadConfig(o.dir)
	if err != nil {
		return err
	}
	m, err := llama.Load(o.dir, llama.LoadOptions{Log: stderr, Prefetch: cfg.Params()*2 > prefetchAbove})
	if err != nil {
		return err
	}
	defer m.Close()
	var jsonw io.Writer
	if o.jsonOut != "" {
		f, err := os.OpenFile(o.jsonOut, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		jsonw = f
	}
	row := func(r map[string]any) {
		if jsonw != nil {
			r["model"] = o.dir
			line, _ := json.Marshal(r)
			jsonw.Write(append(line, '\n'))
		}
	}

	peak, _, err := b.CopyBandwidth(256<<20, 10)
	if err != nil {
		return err
	}
	c := m.Config
	var stepBytes float64 // the weights a decode step reads: all but the embedding table
	for _, w := range m.Weights() {
		if *w.Dst != nil && (w.Name != "model.embed_tokens.weight" || c.TieEmbeddings) {
			stepBytes += float64((*w.Dst).Numel() * (*w.Dst).DType.Size())
		}
	}
	r := llama.NewRunner(m, b)
	fmt.Fprintf(stdout, "device: %s (%d SMs, compute capability %d.%d); copy peak %.0f GB/s\n", b.Name(), b.SMs(),
		b.ComputeCapability()/10, b.ComputeCapability()%10, peak)
	fmt.Fprintf(stdout, "model: %s: %d layers, dim %d, vocab %d, %s weights; %.3f GB read per decode step\n",
		o.dir, c.Layers, c.Dim, c.Vocab, m.Embed.DType, stepBytes/1e9)
	row(map[string]any{"what": "profile_device", "device": b.Name(), "copy_gbps": peak, "layers": c.Layers, "step_bytes": stepBytes})

	forms := []bool{true}
	switch o.step {
	case "generic":
		forms = []bool{false}
	case "both":
		forms = []bool{false, true}
	}
	prompt := make([]int32, o.prompt)
	for i := range prompt {
		prompt[i] = int32((i*7919 + 13) % c.Vocab)
	}
	for _, fused := range forms {
		capacity := o.prompt + 8 + 2*o.tokens + 8
		if capacity > c.MaxPositions {
			return usagef("--prompt %d and --tokens %d need %d positions; the model takes %d", o.prompt, o.tokens, capacity, c.MaxPositions)
		}
		kv := r.NewKVCache(capacity+1, 16)
		if _, err := r.Forward(llama.Prompt(0, prompt[:o.prompt-1], 0, false), kv, nil); err != nil {
			return err
		}
		d, err := gpu.NewDecoder(b, r.Model, kv, 0, capacity)
		if err != nil {
			return err
		}
		err = func() error {
			defer d.Close()
			if fused && !d.Fused {
				fmt.Fprintf(stdout, "\nthe fused step needs compute capability 9.0 and an f32 KV cache; profiling the generic step\n")
			}
			d.Fused = fused && d.Fused
			d.PDL = d.Fused
			if err := d.Start(prompt[o.prompt-1], o.prompt-1); err != nil {
				return err
			}
			var stepErr error
			steps := func(n int) func() {
				return func() {
					for i := 0; i < n; i++ {
						if err := d.Step(); err != nil && stepErr == nil {
							stepErr = err
						}
					}
				}
			}
			if _, err := b.Time(0, 1, steps(8)); err != nil { // capture and warm up
				return err
			}
			ms, err := b.Time(0, 1, steps(o.tokens))
			if err == nil {
				err = stepErr
			}
			if err != nil {
				return err
			}
			ms /= float64(o.tokens)
			form := "generic"
			if d.Fused {
				form = "fused"
				if d.PDL {
					form = "fused, PDL"
				}
			}
			gbps := stepBytes / (ms * 1e-3) / 1e9
			fmt.Fprintf(stdout, "\ndecode step (%s; one CUDA graph per step): %.1f µs = %.1f tok/s; weights at %.0f GB/s = %.2f × copy\n",
				form, 1e3*ms, 1e3/ms, gbps, gbps/peak)
			row(map[string]any{"what": "profile_decode", "form": form, "us": 1e3 * ms, "tok_s": 1e3 / ms, "gbps": gbps, "frac_copy": gbps / peak})

			p, err := d.Profile(o.tokens)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "per kernel (events between back-to-back launches, no graph, no PDL: %.1f µs per step):\n", p.Micros)
			width := len("kernel")
			for _, k := range p.Kernels {
				width = max(width, len([]rune(k.Name)))
			}
			fmt.Fprintf(stdout, "%-*s %6s %10s %7s %6s %7s\n", width, "kernel", "calls", "total µs", "share", "GB/s", "% copy")
			for _, k := range p.ByTime() {
				gb, frac := "", ""
				r := map[string]any{"what": "profile_kernel", "form": form, "kernel": k.Name, "calls": k.Calls, "us": k.Micros, "share": k.Micros / p.Micros, "bytes": k.Bytes}
				if k.Bytes > 0 {
					g := k.Bytes / (k.Micros * 1e-6) / 1e9
					gb, frac = fmt.Sprintf("%.0f", g), fmt.Sprintf("%.0f%%", 100*g/peak)
					r["gbps"], r["frac_copy"] = g, g/peak
				}
				row(r)
				fmt.Fprintf(stdout, "%s%*s %6d %10.1f %6.1f%% %6s %7s\n", k.Name, width-len([]rune(k.Name)), "", k.Calls, k.Micros, 100*k.Micros/p.Micros, gb, frac)
			}
			return nil
		}()
		for l := range kv.K {
			b.Free(kv.K[l])
			b.Free(kv.V[l])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

package llama

import (
	"math"
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
	"github.com/tillerlm/tiller/tensor/tensortest"
)

// deviceRunner is a runner on tensortest.Device: the same ops as the CPU's, on tensors kept out of
// the host's view, so that what a GPU run does with its memory (records, backward intermediates,
// hook reads and patches) is checked on the CPU.
func deviceRunner(t *testing.T, m *Model) (*Runner, *tensortest.Device) {
	d := tensortest.NewDevice(2)
	t.Cleanup(d.Close)
	return NewRunner(m, d), d
}

// The backward pass on a device gives the CPU's gradients at every hook point — through the
// fused attention and through the pattern, with From, with a dropped layer resumed from a
// Resumable pass, split by sequence and as whole-batch tensors — and gives back every byte it
// takes. The same ops run on both sides; only the row moves (gathers and scatters on the device)
// and the LM head's sparse backward (a product there, an f64 sum here) differ, by rounding.
func TestBackwardOnDevice(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.F32, tensor.BF16} {
		m, _ := tinyModel(t, dt, map[string]any{"num_hidden_layers": 3})
		rc := newRunner(t, m, 2)
		rd, d := deviceRunner(t, m)
		var b Batch
		for s, ids := range [][]int32{prompt[:9], prompt[2:9]} {
			for i, id := range ids {
				b.Tokens, b.Seq, b.Pos = append(b.Tokens, id), append(b.Seq, int32(s)), append(b.Pos, int32(i))
				b.Logits = append(b.Logits, (s == 0 && i == 8) || (s == 1 && (i == 3 || i == 6)))
			}
		}
		var points []hooks.Point
		for l := 0; l < m.Config.Layers; l++ {
			for _, k := range []hooks.Kind{hooks.ResidPre, hooks.Q, hooks.K, hooks.V, hooks.Z, hooks.AttnOut, hooks.ResidMid, hooks.MLPPost, hooks.MLPOut, hooks.ResidPost} {
				points = append(points, hooks.Point{Layer: l, Kind: k})
			}
		}
		points = append(points, hooks.Point{Layer: 1, Kind: hooks.Pattern}, hooks.Point{Layer: -1, Kind: hooks.Embed}, hooks.Point{Layer: -1, Kind: hooks.FinalNorm})
		from := map[int32]int32{0: 3, 1: 2}
		kv := rd.NewKVCache(len(b.Tokens)+32, 16)
		if _, err := rd.Forward(b, kv, nil); err != nil {
			t.Fatal(err)
		}
		rd.FreeKVCache(kv)
		live := d.Live // the weights and the runner's activations
		for _, metric := range []Metric{LogitDiff{Row: 0, A: 5, B: 11}, LogProb{Rows: []int{0, 1, 2}, Tokens: []int32{4, 9, 60}}} {
			record := func(r *Runner) (*Record, *tensor.Tensor) {
				rec, logits, err := r.Record(b, nil)
				if err != nil {
					t.Fatal(err)
				}
				dl := tensor.New(logits.DType, logits.Shape...)
				if _, err := metric.Eval(logits, dl); err != nil {
					t.Fatal(err)
				}
				return rec, dl
			}
			recC, dlC := record(rc)
			recD, dlD := record(rd)
			sameBits(t, "logit gradient", dlD.F32(), dlC.F32())
			for _, opt := range []GradOptions{{Points: points}, {Points: points, From: from, Resumable: true}} {
				gc, err := rc.Backward(recC, dlC, opt)
				if err != nil {
					t.Fatal(err)
				}
				gd, err := rd.Backward(recD, dlD, opt)
				if err != nil {
					t.Fatal(err)
				}
				batched := opt
				batched.Batched = true
				gb, err := rd.Backward(recD, dlD, batched)
				if err != nil {
					t.Fatal(err)
				}
				dims := m.Config.HookDims()
				samePoints(t, dt.String()+" device", gd, gc, b, dims, nil)
				samePoints(t, dt.String()+" device, batched", gb, gc, b, dims, d)
				if opt.Resumable {
					drop := GradOptions{Points: points, From: from, DropLayers: []int{1}}
					want, err := rc.Backward(recC, dlC, drop)
					if err != nil {
						t.Fatal(err)
					}
					drop.Resume, drop.Batched = gb, true
					got, err := rd.Backward(recD, dlD, drop)
					if err != nil {
						t.Fatal(err)
					}
					samePoints(t, dt.String()+" device, layer 1 dropped, resumed", got, want, b, dims, d)
					got.Release()
				}
				gb.Release()
				gd.Release()
			}
			recD.Release()
			if d.Live != live {
				t.Errorf("%s: %d device allocations outlive the record and gradients (want %d: the weights and the runner's state)", dt, d.Live, live)
			}
		}
		if _, err := rd.Backward(func() *Record { r, _, _ := rd.Record(b, nil); return r }(), tensor.New(tensor.F32, 3, m.Config.Vocab), GradOptions{Weights: true}); err == nil {
			t.Error("weight gradients on a device: no error")
		}
	}
}

// samePoints compares two passes' gradients at every point the CPU pass want holds, per sequence;
// got's may be whole-batch tensors on device d (Batched), split here as the CPU splits them.
func samePoints(t *testing.T, what string, got, want *Grads, b Batch, dims hooks.Dims, d *tensortest.Device) {
	t.Helper()
	if d != nil {
		split := hooks.NewCache()
		for p, x := range got.Batch {
			h := tensor.New(x.DType, x.Shape...)
			d.Download(h, x)
			seq, pos := b.Seq, b.Pos
			if p.Kind == hooks.FinalNorm {
				seq, pos = nil, nil
				for i := range b.Tokens {
					if b.Logits[i] {
						seq, pos = append(seq, b.Seq[i]), append(pos, b.Pos[i])
					}
				}
			}
			split.Put(p, dims, h, seq, pos)
		}
		got = &Grads{Points: split}
	}
	for _, s := range want.Points.Seqs() {
		for _, name := range want.Points.Names(s) {
			w, _ := want.Points.Get(s, name)
			g, ok := got.Points.Get(s, name)
			if !ok {
				t.Fatalf("%s: no %s for sequence %d", what, name, s)
			}
			wv, gv := w.ToF64(), g.ToF64()
			scale := maxAbs64(wv)
			if len(wv) != len(gv) {
				t.Fatalf("%s: %s of sequence %d: %d values, want %d", what, name, s, len(gv), len(wv))
			}
			for i := range wv {
				if math.Abs(gv[i]-wv[i]) > 1e-6*scale {
					t.Fatalf("%s: %s of sequence %d, element %d: %g, CPU %g", what, name, s, i, gv[i], wv[i])
				}
			}
		}
	}
}

// Hooks on a device do what they do on the host: reads give the same caches, captures the whole
// batch, patches (whole rows, one head, the pattern) and additions the same logits, bit for bit.
func TestHooksOnDevice(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, nil)
	rc := newRunner(t, m, 2)
	rd, d := deviceRunner(t, m)
	dims := m.Config.HookDims()
	src := []int32{1, 7, 7, 30, 31, 32, 60, 2, 9, 90, 44}
	read := func(r *Runner) *hooks.Set {
		h := hooks.NewSet(dims)
		if err := h.Read("blocks.*.hook_resid_pre,blocks.1.attn.hook_z,blocks.1.attn.hook_pattern"); err != nil {
			t.Fatal(err)
		}
		if err := h.Capture("blocks.0.hook_mlp_out"); err != nil {
			t.Fatal(err)
		}
		run(t, r, src, h)
		return h
	}
	hc, hd := read(rc), read(rd)
	for _, name := range hc.Cache.Names(0) {
		w, _ := hc.Cache.Get(0, name)
		g, ok := hd.Cache.Get(0, name)
		if !ok {
			t.Fatalf("device read: no %s", name)
		}
		sameBits(t, "device read "+name, g.F32(), w.F32())
	}
	p := hooks.Point{Layer: 0, Kind: hooks.MLPOut}
	cc, cd := hc.Captured[p], hd.Captured[p]
	if len(cc) != 1 || len(cd) != 1 || cd[0].X.OnHost() || !cc[0].X.OnHost() {
		t.Fatalf("captures: %d on the CPU, %d on the device (on the host: %v)", len(cc), len(cd), len(cd) == 1 && cd[0].X.OnHost())
	}
	x := tensor.New(tensor.F32, cd[0].X.Shape...)
	d.Download(x, cd[0].X)
	sameBits(t, "device capture", x.F32(), cc[0].X.F32())

	v := make([]float32, m.Config.Dim)
	for i := range v {
		v[i] = float32(i%5) - 2
	}
	last := int32(len(prompt) - 1)
	for _, c := range []struct {
		name  string
		build func(h *hooks.Set) error
	}{
		{"resid_pre of every position", func(h *hooks.Set) error {
			return h.ReplaceFrom("blocks.0.hook_resid_pre", hc.Cache, 0, hooks.Where{})
		}},
		{"one head of z at the last two positions", func(h *hooks.Set) error {
			return h.ReplaceFrom("blocks.1.attn.hook_z", hc.Cache, 0, hooks.Where{Positions: []int32{last - 1, last}, Heads: []int{4}})
		}},
		{"the pattern of heads 0 and 2", func(h *hooks.Set) error {
			return h.ReplaceFrom("blocks.1.attn.hook_pattern", hc.Cache, 0, hooks.Where{Heads: []int{0, 2}})
		}},
		{"a read, a patch and an addition at one point", func(h *hooks.Set) error {
			if err := h.Read("blocks.1.hook_resid_pre"); err != nil {
				return err
			}
			if err := h.ReplaceFrom("blocks.1.hook_resid_pre", hc.Cache, 0, hooks.Where{Positions: []int32{3}}); err != nil {
				return err
			}
			return h.Add("blocks.1.hook_resid_pre", hooks.Steer{Vector: v, Alpha: 0.5})
		}},
	} {
		hostSet, devSet := hooks.NewSet(dims), hooks.NewSet(dims)
		if err := c.build(hostSet); err != nil {
			t.Fatal(err)
		}
		if err := c.build(devSet); err != nil {
			t.Fatal(err)
		}
		want := run(t, rc, prompt, hostSet)
		if plain := run(t, rc, prompt, nil); plain[len(plain)-1] == want[len(want)-1] {
			t.Fatalf("%s: the patch changes nothing; the test would check nothing", c.name)
		}
		sameBits(t, "device patch: "+c.name, run(t, rd, prompt, devSet), want)
		devSet.Release(d)
	}
	live := d.Live
	hd.Release(d)
	if d.Live != live-1 {
		t.Errorf("releasing the set freed %d allocations, want its one capture", live-d.Live)
	}
	// A forward pass through the explicit attention (a pattern read) keeps nothing on the device.
	live = d.Live
	h := hooks.NewSet(dims)
	if err := h.Read("blocks.*.attn.hook_pattern"); err != nil {
		t.Fatal(err)
	}
	kv := rd.NewKVCache(len(prompt), 4)
	if _, err := rd.Forward(Prompt(0, prompt, 0, true), kv, h); err != nil {
		t.Fatal(err)
	}
	rd.FreeKVCache(kv)
	if d.Live != live {
		t.Errorf("a forward pass reading the pattern left %d allocations on the device", d.Live-live)
	}
}

var _ DeviceMemory = (*tensortest.Device)(nil)

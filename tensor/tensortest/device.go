package tensortest

import (
	"fmt"
	"math"
	"sort"

	"github.com/tillerlm/tiller/tensor"
)

// Device is a backend whose tensors live outside the host's view — Dev set, Data nil, as a GPU's
// are — backed by host memory of its own, every op done by a tensor.CPU on views of that memory.
// Code written for a device backend (which must upload, download, free, and never touch Data)
// runs on it and is checked on the CPU against the same code on the CPU backend, in every test
// run, GPU or none. It offers what package gpu's Backend offers beyond tensor.Backward for
// attribution on the device: Free, Copy, PatchRows, AtPScores and MetricLogits, with the
// semantics of kernels/attribution.cu written plainly here.
type Device struct {
	cpu    *tensor.CPU
	allocs []devAlloc // ascending base
	next   uint64
	Live   int // allocations not freed: a test can check that a pass gives back what it takes
	// Memory, when not 0, is the device's size in bytes: FreeMemory reports it less what is
	// allocated, so that code sizing its work by free memory can be tested (allocations are not
	// refused: Peak shows whether the work stayed within it).
	Memory int64
	used   int64 // bytes allocated now
	// Peak is the most bytes allocated at once since it was last set; a test may set it to the
	// bytes allocated now (Used) before the work it measures.
	Peak int64
}

// Used is the bytes allocated now.
func (d *Device) Used() int64 { return d.used }

type devAlloc struct {
	base uint64
	data []byte
}

var _ tensor.Backward = (*Device)(nil)

// NewDevice makes a device backend computing with threads CPU threads.
func NewDevice(threads int) *Device { return &Device{cpu: tensor.NewCPU(threads), next: 1 << 20} }

// Close stops the backend's CPU.
func (d *Device) Close() { d.cpu.Close() }

// view is t as a host tensor over the device's memory (t itself when it is on the host).
func (d *Device) view(t *tensor.Tensor) *tensor.Tensor {
	if t == nil || t.OnHost() {
		return t
	}
	i := sort.Search(len(d.allocs), func(i int) bool { return d.allocs[i].base > t.Dev }) - 1
	bytes := t.Numel() * t.DType.Size()
	if i < 0 || t.Dev+uint64(bytes) > d.allocs[i].base+uint64(len(d.allocs[i].data)) {
		panic(fmt.Sprintf("tensortest: %v at %#x is not device memory this backend holds", t, t.Dev))
	}
	off := t.Dev - d.allocs[i].base
	return &tensor.Tensor{Shape: t.Shape, DType: t.DType, Data: d.allocs[i].data[off : off+uint64(bytes)]}
}

func (d *Device) views(ts ...*tensor.Tensor) []*tensor.Tensor {
	out := make([]*tensor.Tensor, len(ts))
	for i, t := range ts {
		out[i] = d.view(t)
	}
	return out
}

func (d *Device) cache(kv *tensor.KVCache) *tensor.KVCache {
	h := *kv
	h.K, h.V = d.views(kv.K...), d.views(kv.V...)
	return &h
}

// Alloc returns a zeroed tensor in the device's memory.
func (d *Device) Alloc(dtype tensor.DType, shape ...int) *tensor.Tensor {
	t := tensor.New(dtype, shape...)
	size := uint64(len(t.Data))
	base := d.next
	d.next += (size + 4096) &^ 255 // a gap after each allocation: an overrun is not another's memory
	d.allocs = append(d.allocs, devAlloc{base, t.Data})
	d.Live++
	d.used += int64(size)
	d.Peak = max(d.Peak, d.used)
	return &tensor.Tensor{Shape: t.Shape, DType: dtype, Dev: base}
}

// FreeMemory is Memory less what is allocated, or 1 TiB when Memory is 0.
func (d *Device) FreeMemory() int64 {
	if d.Memory == 0 {
		return 1 << 40
	}
	return d.Memory - d.used
}

// MaxQKContext is the longest sequence AtPQK takes: any.
func (d *Device) MaxQKContext() int { return math.MaxInt32 }

// Free gives back a tensor Alloc or Upload made (not a view of one).
func (d *Device) Free(t *tensor.Tensor) {
	if t == nil || t.Dev == 0 {
		return
	}
	i := sort.Search(len(d.allocs), func(i int) bool { return d.allocs[i].base >= t.Dev })
	if i == len(d.allocs) || d.allocs[i].base != t.Dev {
		panic(fmt.Sprintf("tensortest: free of %#x, which no allocation starts at", t.Dev))
	}
	d.used -= int64(len(d.allocs[i].data))
	d.allocs = append(d.allocs[:i], d.allocs[i+1:]...)
	d.Live--
	t.Dev = 0
}

func (d *Device) Upload(t *tensor.Tensor) *tensor.Tensor {
	if !t.OnHost() {
		return t
	}
	u := d.Alloc(t.DType, t.Shape...)
	copy(d.view(u).Data, t.Data)
	return u
}

func (d *Device) Download(dst, src *tensor.Tensor) {
	if !dst.OnHost() || src.OnHost() {
		panic(fmt.Sprintf("tensortest: download of %v (device %v) into %v (host %v)", src, !src.OnHost(), dst, dst.OnHost()))
	}
	d.cpu.Download(dst, d.view(src))
}

// Copy copies src into dst, both in device memory, of one dtype and size.
func (d *Device) Copy(dst, src *tensor.Tensor) {
	if dst.OnHost() || src.OnHost() || dst.DType != src.DType || dst.Numel() != src.Numel() {
		panic(fmt.Sprintf("tensortest: copy of %v into %v", src, dst))
	}
	copy(d.view(dst).Data, d.view(src).Data)
}

func (d *Device) Embedding(dst, table *tensor.Tensor, ids []int32) {
	d.cpu.Embedding(d.view(dst), d.view(table), ids)
}
func (d *Device) RMSNorm(dst, x, w *tensor.Tensor, eps float32) {
	d.cpu.RMSNorm(d.view(dst), d.view(x), d.view(w), eps)
}
func (d *Device) MatMul(dst, x, w, bias *tensor.Tensor) {
	d.cpu.MatMul(d.view(dst), d.view(x), d.view(w), d.view(bias))
}
func (d *Device) RoPE(x *tensor.Tensor, pos []int32, invFreq []float32) {
	d.cpu.RoPE(d.view(x), pos, invFreq)
}
func (d *Device) StoreKV(kv *tensor.KVCache, layer int, k, v *tensor.Tensor, seq, pos []int32) {
	d.cpu.StoreKV(d.cache(kv), layer, d.view(k), d.view(v), seq, pos)
}
func (d *Device) Attention(dst, q *tensor.Tensor, kv *tensor.KVCache, layer int, seq, pos []int32) {
	d.cpu.Attention(d.view(dst), d.view(q), d.cache(kv), layer, seq, pos)
}
func (d *Device) SiLUMul(dst, gate, up *tensor.Tensor) {
	d.cpu.SiLUMul(d.view(dst), d.view(gate), d.view(up))
}
func (d *Device) Add(dst, a, b *tensor.Tensor) { d.cpu.Add(d.view(dst), d.view(a), d.view(b)) }
func (d *Device) Softmax(x *tensor.Tensor)     { d.cpu.Softmax(d.view(x)) }
func (d *Device) AttentionPattern(p, q *tensor.Tensor, kv *tensor.KVCache, layer int, seq, pos []int32) {
	d.cpu.AttentionPattern(d.view(p), d.view(q), d.cache(kv), layer, seq, pos)
}
func (d *Device) AttentionApply(dst, p *tensor.Tensor, kv *tensor.KVCache, layer int, seq, pos []int32) {
	d.cpu.AttentionApply(d.view(dst), d.view(p), d.cache(kv), layer, seq, pos)
}
func (d *Device) MatMulBackward(dx, dw, db, dy, x, w *tensor.Tensor) {
	d.cpu.MatMulBackward(d.view(dx), d.view(dw), d.view(db), d.view(dy), d.view(x), d.view(w))
}
func (d *Device) RMSNormBackward(dx, dw, dy, x, w *tensor.Tensor, eps float32) {
	d.cpu.RMSNormBackward(d.view(dx), d.view(dw), d.view(dy), d.view(x), d.view(w), eps)
}
func (d *Device) RoPEBackward(dx *tensor.Tensor, pos []int32, invFreq []float32) {
	d.cpu.RoPEBackward(d.view(dx), pos, invFreq)
}
func (d *Device) AttentionBackward(dq, dk, dv, dout, q, k, v *tensor.Tensor, seq, pos []int32) {
	d.cpu.AttentionBackward(d.view(dq), d.view(dk), d.view(dv), d.view(dout), d.view(q), d.view(k), d.view(v), seq, pos)
}
func (d *Device) AttentionApplyBackward(dp, dv, dout, p, v *tensor.Tensor, seq, pos []int32) {
	d.cpu.AttentionApplyBackward(d.view(dp), d.view(dv), d.view(dout), d.view(p), d.view(v), seq, pos)
}
func (d *Device) AttentionPatternBackward(dq, dk, dp, p, q, k *tensor.Tensor, seq, pos []int32) {
	d.cpu.AttentionPatternBackward(d.view(dq), d.view(dk), d.view(dp), d.view(p), d.view(q), d.view(k), seq, pos)
}
func (d *Device) SiLUMulBackward(dgate, dup, dy, gate, up *tensor.Tensor) {
	d.cpu.SiLUMulBackward(d.view(dgate), d.view(dup), d.view(dy), d.view(gate), d.view(up))
}
func (d *Device) EmbeddingBackward(dtable, dy *tensor.Tensor, ids []int32) {
	d.cpu.EmbeddingBackward(d.view(dtable), d.view(dy), ids)
}

// PatchRows writes x[dst[j], lo:hi] = value[src[j], lo:hi]: x (n, width), value (m, width), F32.
func (d *Device) PatchRows(x, value *tensor.Tensor, dst, src []int32, lo, hi int) {
	xv, vv := d.view(x).F32(), d.view(value).F32()
	width := x.Cols()
	for j := range dst {
		copy(xv[int(dst[j])*width+lo:int(dst[j])*width+hi], vv[int(src[j])*width+lo:int(src[j])*width+hi])
	}
}

// AtPScores writes out[j, h] = Σ_{e in node h} (corrupt[krow_j, e] − clean[crow_j, e])·grad[crow_j, e]
// in F64, with nodes of width/out.Cols() values: out (len(crow), nodes) F64; clean, grad (n, width)
// and corrupt (m, width) F32.
func (d *Device) AtPScores(out, clean, corrupt, grad *tensor.Tensor, crow, krow []int32) {
	o, c, k, g := d.view(out).F64(), d.view(clean).F32(), d.view(corrupt).F32(), d.view(grad).F32()
	width, nodes := clean.Cols(), out.Cols()
	chunk := width / nodes
	for j := range crow {
		for h := 0; h < nodes; h++ {
			var s float64
			for e := h * chunk; e < (h+1)*chunk; e++ {
				ce, ke := int(crow[j])*width+e, int(krow[j])*width+e
				s += (float64(k[ke]) - float64(c[ce])) * float64(g[ce])
			}
			o[j*nodes+h] = s
		}
	}
}

// MetricLogits returns the values of each row r of logits (rows, vocab) at cols[r·k … r·k + k − 1]
// (k = len(cols)/rows) and, when lse is set, each row's log Σ e^x.
func (d *Device) MetricLogits(logits *tensor.Tensor, cols []int32, lse bool) ([]float32, []float64) {
	x := d.view(logits).F32()
	rows, vocab := logits.Rows(), logits.Cols()
	k := len(cols) / rows
	vals := make([]float32, len(cols))
	for r := 0; r < rows; r++ {
		for c := 0; c < k; c++ {
			vals[r*k+c] = x[r*vocab+int(cols[r*k+c])]
		}
	}
	if !lse {
		return vals, nil
	}
	out := make([]float64, rows)
	for r := 0; r < rows; r++ {
		row := x[r*vocab : (r+1)*vocab]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, float64(v))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - m)
		}
		out[r] = m + math.Log(s)
	}
	return vals, out
}

// AtPQK is AtP*'s QK fix of one layer (attrib's qkLayer, kernels/attribution.cu's atp_qk_*): for
// query token i and head h, qout[i, h] = Σ_t softmax_t(qd[i,h]·kc_t·s)·dA[i,h,t] − base where
// changed[i], base = Σ_t softmax_t(qc[i,h]·kc_t·s)·dA[i,h,t]; for key token j and kv head g,
// kout[j, g] = Σ_{h in g} Σ_{queries i at or after j} (the row's Σ A·dA with key j's logit alone
// patched, qc[i,h]·kd_j·s) − base, where changed[j]. F64 results; the batch is whole sequences.
func (d *Device) AtPQK(qout, kout, qc, kc, qd, kd, dA *tensor.Tensor, changed, seq, pos []int32) {
	qo, ko := d.view(qout).F64(), d.view(kout).F64()
	qcv, kcv, qdv, kdv, da := d.view(qc).F32(), d.view(kc).F32(), d.view(qd).F32(), d.view(kd).F32(), d.view(dA).F32()
	heads, kvHeads, dim, ctx := qc.Shape[1], kc.Shape[1], qc.Shape[2], dA.Shape[2]
	group, scale := heads/kvHeads, 1/math.Sqrt(float64(dim))
	row := map[[2]int32]int{}
	for i := range seq {
		row[[2]int32{seq[i], pos[i]}] = i
	}
	logit := func(q []float32, i, h int, k []float32, j, g int) float64 {
		var s float32
		for e := 0; e < dim; e++ {
			s += q[(i*heads+h)*dim+e] * k[(j*kvHeads+g)*dim+e]
		}
		return float64(s) * scale
	}
	clear(qo)
	clear(ko)
	for i := range seq {
		for h := 0; h < heads; h++ {
			g, n := h/group, int(pos[i])+1
			keys := make([]int, n)
			for t := range keys {
				keys[t] = row[[2]int32{seq[i], int32(t)}]
			}
			a := da[(i*heads+h)*ctx:]
			softmax := func(s []float64) float64 { // Σ softmax(s)·dA
				m := math.Inf(-1)
				for _, v := range s {
					m = math.Max(m, v)
				}
				var z, w float64
				for t, v := range s {
					z += math.Exp(v - m)
					w += math.Exp(v-m) * float64(a[t])
				}
				return w / z
			}
			s := make([]float64, n)
			for t, j := range keys {
				s[t] = logit(qcv, i, h, kcv, j, g)
			}
			base := softmax(s)
			if changed[i] != 0 {
				s2 := make([]float64, n)
				for t, j := range keys {
					s2[t] = logit(qdv, i, h, kcv, j, g)
				}
				qo[i*heads+h] = softmax(s2) - base
			}
			for t, j := range keys {
				if changed[j] == 0 {
					continue
				}
				s2 := append([]float64(nil), s...)
				s2[t] = logit(qcv, i, h, kdv, j, g)
				ko[j*kvHeads+g] += softmax(s2) - base
			}
		}
	}
}

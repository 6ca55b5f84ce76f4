//go:build cuda

package gpu

import (
	"fmt"

	"github.com/tillerlm/tiller/tensor"
)

// The tensor.Backend ops. Each checks shapes (a mismatch is a programmer error and panics, as on
// the CPU), stages its host arrays, and queues its kernels; none waits for the device unless
// SyncEachOp is set.

func sameShape(op string, a, b *tensor.Tensor) {
	if a.Numel() != b.Numel() || a.Cols() != b.Cols() {
		panic(fmt.Sprintf("gpu: %s of %v and %v", op, a.Shape, b.Shape))
	}
}

func f32(op string, ts ...*tensor.Tensor) {
	for _, t := range ts {
		if t.DType != tensor.F32 {
			panic(fmt.Sprintf("gpu: %s of a %s tensor; activations are F32", op, t.DType))
		}
	}
}

func (b *Backend) Embedding(dst, table *tensor.Tensor, ids []int32) {
	d := table.Cols()
	if dst.Rows() != len(ids) || dst.Cols() != d {
		panic(fmt.Sprintf("gpu: embedding of %d ids from %v into %v", len(ids), table.Shape, dst.Shape))
	}
	vocab := table.Rows()
	for _, id := range ids {
		if id < 0 || int(id) >= vocab {
			panic(fmt.Sprintf("gpu: token id %d outside the embedding table of %d rows", id, vocab))
		}
	}
	defer b.enter()()
	b.embedding(dev(dst), table, b.ints(ids), len(ids), d)
	b.done("embedding")
}

func (b *Backend) RMSNorm(dst, x, w *tensor.Tensor, eps float32) {
	sameShape("rmsnorm", dst, x)
	f32("rmsnorm", dst, x)
	d := x.Cols()
	if w.Numel() != d {
		panic(fmt.Sprintf("gpu: rmsnorm of %v with weight %v", x.Shape, w.Shape))
	}
	defer b.enter()()
	b.rmsnorm(dev(dst), dev(x), w, x.Rows(), d, eps)
	b.done("rmsnorm")
}

// ResidualRMSNorm is the fused residual update and norm of a decoder block:
// resid = (resid + delta) + sdelta; dst = rmsnorm(resid) ⊙ w.
// resid, delta, dst: (n, d) F32; sdelta (n, d) F32 steering rows, or nil.
func (b *Backend) ResidualRMSNorm(dst, resid, delta, sdelta, w *tensor.Tensor, eps float32) {
	sameShape("residual rmsnorm", dst, resid)
	sameShape("residual rmsnorm", resid, delta)
	n, d := resid.Rows(), resid.Cols()
	if w.Numel() != d || (sdelta != nil && sdelta.Numel() != n*d) {
		panic(fmt.Sprintf("gpu: residual rmsnorm of %v with weight %v, steering rows %v", resid.Shape, w, sdelta))
	}
	defer b.enter()()
	b.residualRMSNorm(dev(dst), dev(resid), dev(delta), dev(sdelta), w, n, d, eps)
	b.done("residual rmsnorm")
}

// MatMul: dst (n, out) = x (n, in) · wᵀ + bias. Up to 8 rows it is the GEMV (product); for more,
// gemm: 9–128 rows (decode batches) with 16-bit weights take the split-K GEMM that streams W once,
// larger n (prefill) the 128 × 128-tile GEMM (products says which when).
func (b *Backend) MatMul(dst, x, w, bias *tensor.Tensor) {
	n, in, out := x.Rows(), x.Cols(), w.Rows()
	if len(w.Shape) != 2 || w.Cols() != in || dst.Rows() != n || dst.Cols() != out || (bias != nil && bias.Numel() != out) {
		panic(fmt.Sprintf("gpu: matmul of x %v, w %v, bias %v into %v", x.Shape, w.Shape, bias, dst.Shape))
	}
	f32("matmul", dst, x)
	defer b.enter()()
	b.products(dev(x), n, in, gemvSeg{w: w, bias: bias, y: dev(dst)})
	b.done("matmul " + w.DType.String())
}

// MatMulQKV is the three input projections of attention in one op: yq = x·wqᵀ + bq, and so for
// k and v (biases may be nil). For n ≤ 8 tokens it is one GEMV launch streaming all three
// matrices; for more, three GEMMs (on decode batches sharing one rounding of x).
func (b *Backend) MatMulQKV(yq, yk, yv, x, wq, bq, wk, bk, wv, bv *tensor.Tensor) {
	n, in := x.Rows(), x.Cols()
	for _, p := range [][3]*tensor.Tensor{{yq, wq, bq}, {yk, wk, bk}, {yv, wv, bv}} {
		y, w, bias := p[0], p[1], p[2]
		if w.Cols() != in || y.Rows() != n || y.Cols() != w.Rows() || (bias != nil && bias.Numel() != w.Rows()) {
			panic(fmt.Sprintf("gpu: qkv projection of x %v, w %v, bias %v into %v", x.Shape, w.Shape, bias, y.Shape))
		}
	}
	defer b.enter()()
	b.products(dev(x), n, in, gemvSeg{w: wq, bias: bq, y: dev(yq)}, gemvSeg{w: wk, bias: bk, y: dev(yk)}, gemvSeg{w: wv, bias: bv, y: dev(yv)})
	b.done("matmul qkv")
}

// MatMulSwiGLU is the first half of the MLP in one op: dst = silu(x·gateᵀ + bg) ⊙ (x·upᵀ + bu).
// For n ≤ 8 tokens it is one fused GEMV launch; for more, two GEMMs (on decode batches sharing one
// rounding of x) and the elementwise gate through tmp, an (n, ffn) F32 scratch tensor.
func (b *Backend) MatMulSwiGLU(dst, tmp, x, gate, bg, up, bu *tensor.Tensor) {
	n, in, out := x.Rows(), x.Cols(), gate.Rows()
	if gate.Cols() != in || up.Rows() != out || up.Cols() != in || dst.Rows() != n || dst.Cols() != out {
		panic(fmt.Sprintf("gpu: swiglu of x %v, gate %v, up %v into %v", x.Shape, gate.Shape, up.Shape, dst.Shape))
	}
	defer b.enter()()
	b.productsSwiGLU(dev(dst), dev(tmp), dev(x), n, in, gate, bg, up, bu)
	b.done("matmul swiglu")
}

func (b *Backend) RoPE(x *tensor.Tensor, pos []int32, invFreq []float32) {
	if len(x.Shape) != 3 || x.Shape[0] != len(pos) || 2*len(invFreq) != x.Shape[2] {
		panic(fmt.Sprintf("gpu: rope of %v with %d positions and %d frequencies", x.Shape, len(pos), len(invFreq)))
	}
	f32("rope", x)
	defer b.enter()()
	p := b.ints(pos)
	f := b.floats(invFreq)
	b.rope(dev(x), p, f, len(pos), x.Shape[1], x.Shape[2])
	b.done("rope")
}

func (b *Backend) SiLUMul(dst, gate, up *tensor.Tensor) {
	sameShape("silu·mul", dst, gate)
	sameShape("silu·mul", gate, up)
	f32("silu·mul", dst, gate, up)
	defer b.enter()()
	b.siluMul(dev(dst), dev(gate), dev(up), dst.Numel())
	b.done("silu·mul")
}

func (b *Backend) Add(dst, x, y *tensor.Tensor) {
	sameShape("add", dst, x)
	sameShape("add", x, y)
	f32("add", dst, x, y)
	defer b.enter()()
	b.add(dev(dst), dev(x), dev(y), dst.Numel())
	b.done("add")
}

func (b *Backend) Softmax(x *tensor.Tensor) {
	f32("softmax", x)
	defer b.enter()()
	b.softmax(dev(x), x.Rows(), x.Cols())
	b.done("softmax")
}

// Argmax writes the index of each row's largest value (the lowest index on a tie) into out,
// an I32 device tensor of x.Rows() elements.
func (b *Backend) Argmax(out, x *tensor.Tensor) {
	f32("argmax", x)
	if out.DType != tensor.I32 || out.Numel() != x.Rows() {
		panic(fmt.Sprintf("gpu: argmax of %v into %v", x, out))
	}
	defer b.enter()()
	b.argmax(dev(out), dev(x), x.Rows(), x.Cols())
	b.done("argmax")
}

// Random fills a BF16 or F32 device tensor with values of standard deviation scale (uniform,
// from a hash of seed and the index): weights for benchmarks, made on the device.
func (b *Backend) Random(t *tensor.Tensor, seed uint64, scale float32) {
	defer b.enter()()
	b.random(t, seed, scale)
	b.done("random")
}

//go:build cuda

package gpu

import (
	"fmt"

	"github.com/tillerlm/tiller/tensor"
)

// The tensor.Backward ops on the device: activation gradients at full precision (f32 arithmetic,
// matrix products with exact products, kernels/gemm_exact.cu), added into their outputs as the
// CPU's are. Weight gradients (dw, db) are the CPU's alone: attribution needs none, and asking for
// them here is a programmer error (llama.Runner.Backward says so before it gets here).

var _ tensor.Backward = (*Backend)(nil)

func noWeightGrads(op string, ts ...*tensor.Tensor) {
	for _, t := range ts {
		if t != nil {
			panic(fmt.Sprintf("gpu: %s: weight gradients are computed on the CPU only", op))
		}
	}
}

// MatMulBackward: dx += dy·w (dy (n, out), w (out, in), dx (n, in)); x only gives the shape.
func (b *Backend) MatMulBackward(dx, dw, db, dy, x, w *tensor.Tensor) {
	noWeightGrads("matmul backward", dw, db)
	n, in, out := dy.Rows(), w.Cols(), w.Rows()
	if len(w.Shape) != 2 || dy.Cols() != out || x.Rows() != n || x.Cols() != in || (dx != nil && (dx.Rows() != n || dx.Cols() != in)) {
		panic(fmt.Sprintf("gpu: matmul backward of dy %v, x %v, w %v into %v", dy.Shape, x.Shape, w.Shape, dx))
	}
	if dx == nil {
		return
	}
	f32("matmul backward", dx, dy)
	defer b.enter()()
	b.gemmExactDx(dev(dx), dev(dy), w, n, in, out)
	b.done("matmul backward " + w.DType.String())
}

func (b *Backend) RMSNormBackward(dx, dw, dy, x, w *tensor.Tensor, eps float32) {
	noWeightGrads("rmsnorm backward", dw)
	sameShape("rmsnorm backward", dy, x)
	d := x.Cols()
	if w.Numel() != d {
		panic(fmt.Sprintf("gpu: rmsnorm backward of %v with weight %v", x.Shape, w.Shape))
	}
	if dx == nil {
		return
	}
	sameShape("rmsnorm backward", dx, x)
	f32("rmsnorm backward", dx, dy, x)
	defer b.enter()()
	b.rmsnormBackward(dev(dx), dev(dy), dev(x), w, x.Rows(), d, eps)
	b.done("rmsnorm backward")
}

func (b *Backend) RoPEBackward(dx *tensor.Tensor, pos []int32, invFreq []float32) {
	if len(dx.Shape) != 3 || dx.Shape[0] != len(pos) || 2*len(invFreq) != dx.Shape[2] {
		panic(fmt.Sprintf("gpu: rope backward of %v with %d positions and %d frequencies", dx.Shape, len(pos), len(invFreq)))
	}
	f32("rope backward", dx)
	defer b.enter()()
	p := b.ints(pos)
	f := b.floats(invFreq)
	b.ropeBackward(dev(dx), p, f, len(pos), dx.Shape[1], dx.Shape[2])
	b.done("rope backward")
}

func (b *Backend) SiLUMulBackward(dgate, dup, dy, gate, up *tensor.Tensor) {
	sameShape("silu·mul backward", dy, gate)
	sameShape("silu·mul backward", gate, up)
	f32("silu·mul backward", dy, gate, up)
	for _, g := range []*tensor.Tensor{dgate, dup} {
		if g != nil {
			sameShape("silu·mul backward", g, gate)
			f32("silu·mul backward", g)
		}
	}
	if dgate == nil && dup == nil {
		return
	}
	defer b.enter()()
	b.siluMulBackward(dev(dgate), dev(dup), dev(dy), dev(gate), dev(up), gate.Numel())
	b.done("silu·mul backward")
}

// EmbeddingBackward: dtable[ids[i]] += dy[i], with an F32 dtable in device memory (the gradient of
// a gather of activation rows; the embedding table's own gradient is a weight gradient).
func (b *Backend) EmbeddingBackward(dtable, dy *tensor.Tensor, ids []int32) {
	d := dtable.Cols()
	if dy.Rows() != len(ids) || dy.Cols() != d {
		panic(fmt.Sprintf("gpu: embedding backward of %d ids from %v into %v", len(ids), dy.Shape, dtable.Shape))
	}
	f32("embedding backward", dtable, dy)
	vocab := dtable.Rows()
	seen := make(map[int32]bool, len(ids))
	per := 1
	for _, id := range ids {
		if id < 0 || int(id) >= vocab {
			panic(fmt.Sprintf("gpu: token id %d outside the embedding table of %d rows", id, vocab))
		}
		if seen[id] {
			per = len(ids) // a repeated id: one block adds every row, in order
		}
		seen[id] = true
	}
	if len(ids) == 0 {
		return
	}
	defer b.enter()()
	b.embeddingBackward(dev(dtable), dev(dy), b.ints(ids), len(ids), d, per)
	b.done("embedding backward")
}

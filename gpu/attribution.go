//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
	"gorgonia.org/cu"
)

var (
	_ llama.DeviceMemory = (*Backend)(nil)
	_ hooks.Device       = (*Backend)(nil)
)

// What recording, hooks and attribution need of a device beyond tensor.Backward
// (llama.DeviceMemory, hooks.Device, attrib's scores): copies within device memory, row patches,
// and the reductions of kernels/attribution.cu, so that only scores and metric values come back.

// Copy copies src into dst, both in device memory, of one dtype and size.
func (b *Backend) Copy(dst, src *tensor.Tensor) {
	if dst.OnHost() || src.OnHost() || dst.DType != src.DType || dst.Numel() != src.Numel() {
		panic(fmt.Sprintf("gpu: copy of %v (device %v) into %v (device %v)", src, !src.OnHost(), dst, !dst.OnHost()))
	}
	if dst.Numel() == 0 {
		return
	}
	defer b.enter()()
	must("cuMemcpyDtoDAsync", cu.MemcpyDtoDAsync(cu.DevicePtr(dst.Dev), cu.DevicePtr(src.Dev), int64(dst.Numel()*dst.DType.Size()), b.stream))
	b.done("copy")
}

// PatchRows writes x[dst[j], lo:hi] = value[src[j], lo:hi]: x (n, width), value (m, width), F32.
func (b *Backend) PatchRows(x, value *tensor.Tensor, dst, src []int32, lo, hi int) {
	width := x.Cols()
	if value.Cols() != width || len(dst) != len(src) || lo < 0 || hi > width || lo > hi {
		panic(fmt.Sprintf("gpu: patch of %d rows of %v, columns [%d, %d), from %v", len(dst), x.Shape, lo, hi, value.Shape))
	}
	for j := range dst {
		if dst[j] < 0 || int(dst[j]) >= x.Rows() || src[j] < 0 || int(src[j]) >= value.Rows() {
			panic(fmt.Sprintf("gpu: patch of row %d of %v from row %d of %v", dst[j], x.Shape, src[j], value.Shape))
		}
	}
	f32("patch rows", x, value)
	if len(dst) == 0 || lo == hi {
		return
	}
	defer b.enter()()
	rows := b.ints(dst, src)
	b.args.reset().p(dev(x)).p(dev(value)).p(rows).p(rows + uint64(4*len(dst))).i(width).i(lo).i(hi)
	b.launch(b.kernel("attribution", "patch_rows_f32"), len(dst), 1, 1, patternThreads(hi-lo), 0)
	b.done("patch rows")
}

// AtPScores writes out[j, h] = Σ_{e in node h} (corrupt[krow_j, e] − clean[crow_j, e])·grad[crow_j, e]
// in F64 (kernels/attribution.cu, atp_scores_f64), nodes of width/out.Cols() values: out
// (len(crow), nodes) F64; clean, grad (n, width) and corrupt (m, width) F32, all in device memory.
func (b *Backend) AtPScores(out, clean, corrupt, grad *tensor.Tensor, crow, krow []int32) {
	width, nodes := clean.Cols(), out.Cols()
	if out.DType != tensor.F64 || out.Rows() != len(crow) || len(krow) != len(crow) || nodes == 0 || width%nodes != 0 ||
		corrupt.Cols() != width || grad.Numel() != clean.Numel() {
		panic(fmt.Sprintf("gpu: AtP scores %v of clean %v, corrupt %v, grad %v for %d rows", out, clean.Shape, corrupt.Shape, grad.Shape, len(crow)))
	}
	f32("atp scores", clean, corrupt, grad)
	if len(crow) == 0 {
		return
	}
	defer b.enter()()
	rows := b.ints(crow, krow)
	b.args.reset().p(dev(out)).p(dev(clean)).p(dev(corrupt)).p(dev(grad)).p(rows).p(rows + uint64(4*len(crow))).i(width).i(width / nodes)
	b.launch(b.kernel("attribution", "atp_scores_f64"), nodes, len(crow), 1, 128, 0)
	b.done("atp scores")
}

// MetricLogits returns the values of each row r of logits (rows, vocab, in device memory) at
// cols[r·k … r·k + k − 1] (k = len(cols)/rows) and, when lse is set, each row's log Σ e^x: what a
// logit difference or a log-probability reads, without the rows crossing to the host.
func (b *Backend) MetricLogits(logits *tensor.Tensor, cols []int32, lse bool) ([]float32, []float64) {
	rows, vocab := logits.Rows(), logits.Cols()
	if rows == 0 || len(cols)%rows != 0 {
		panic(fmt.Sprintf("gpu: metric of %d columns over %v logits", len(cols), logits.Shape))
	}
	for _, c := range cols {
		if c < 0 || int(c) >= vocab {
			panic(fmt.Sprintf("gpu: metric column %d outside a vocabulary of %d", c, vocab))
		}
	}
	f32("metric logits", logits)
	vals := make([]float32, len(cols))
	var lses []float64
	out := b.Alloc(tensor.F32, len(cols)+1+2*rows) // the values, then the log-sum-exps as F64
	defer b.Free(out)
	defer b.enter()()
	var lseDev uint64
	if lse {
		lseDev = out.Dev + uint64(4*len(cols)+4*(len(cols)%2)) // 8-byte aligned
	}
	b.args.reset().p(out.Dev).p(lseDev).p(dev(logits)).p(b.ints(cols)).i(len(cols) / rows).i(vocab)
	b.launch(b.kernel("attribution", "metric_logits_f32"), rows, 1, 1, 128, 0)
	if len(vals) > 0 {
		must("cuMemcpyDtoHAsync", cu.MemcpyDtoHAsync(unsafe.Pointer(&vals[0]), cu.DevicePtr(out.Dev), int64(4*len(vals)), b.stream))
	}
	if lse {
		lses = make([]float64, rows)
		must("cuMemcpyDtoHAsync", cu.MemcpyDtoHAsync(unsafe.Pointer(&lses[0]), cu.DevicePtr(lseDev), int64(8*rows), b.stream))
	}
	if err := b.stream.Synchronize(); err != nil {
		panic(fmt.Sprintf("gpu: metric logits (or an op queued before it) failed on the device: %v", err))
	}
	b.stage.reset()
	return vals, lses
}

// QKMaxContext is the longest sequence AtPQK takes (kernels/attribution.cu, QK_MAX_CTX).
const QKMaxContext = 2048

// MaxQKContext is QKMaxContext, for callers that see the backend through an interface.
func (b *Backend) MaxQKContext() int { return QKMaxContext }

// AtPQK is AtP*'s QK fix of one layer (kernels/attribution.cu, atp_qk_rows_f64 and
// atp_qk_keys_f64): qout (n, heads) and kout (n, kv_heads) F64 from the clean (qc, kc) and patched
// (qd, kd) queries and keys after RoPE, (n, heads, D) and (n, kv_heads, D), and the pattern's
// gradient dA (n, heads, ctx), over a batch of whole sequences (seq, pos) of at most QKMaxContext
// positions; changed (n) flags the tokens whose q and k are patched.
func (b *Backend) AtPQK(qout, kout, qc, kc, qd, kd, dA *tensor.Tensor, changed, seq, pos []int32) {
	n, heads, kvHeads, dim := len(seq), qc.Shape[1], kc.Shape[1], qc.Shape[2]
	if len(qc.Shape) != 3 || len(kc.Shape) != 3 || qc.Shape[0] != n || kc.Shape[0] != n || kc.Shape[2] != dim || heads%kvHeads != 0 || dim > 256 ||
		qd.Numel() != qc.Numel() || kd.Numel() != kc.Numel() || len(changed) != n || qout.DType != tensor.F64 || kout.DType != tensor.F64 ||
		qout.Numel() != n*heads || kout.Numel() != n*kvHeads {
		panic(fmt.Sprintf("gpu: QK fix of qc %v, kc %v, qd %v, kd %v into %v, %v for %d tokens", qc.Shape, kc.Shape, qd.Shape, kd.Shape, qout, kout, n))
	}
	checkPatternShape("QK fix", dA, heads, pos)
	f32("QK fix", qc, kc, qd, kd, dA)
	x := newGradIndex("QK fix", seq, pos)
	for _, l := range x.lens {
		if l > QKMaxContext {
			panic(fmt.Sprintf("gpu: QK fix of a sequence of %d positions; it takes up to %d", l, QKMaxContext))
		}
	}
	pctx := dA.Shape[2]
	defer b.enter()()
	contrib := b.scratch("QK fix contributions", 2*n*heads*pctx) // f64
	rows, tbase, p, tlen := x.device(b)
	flags := b.ints(changed)
	scale := float32(1 / math.Sqrt(float64(dim)))
	b.args.reset().p(dev(qout)).p(dev(contrib)).p(dev(qc)).p(dev(kc)).p(dev(qd)).p(dev(kd)).p(dev(dA)).p(flags).p(rows).p(tbase).p(p).
		i(heads).i(kvHeads).i(dim).i(pctx).f(scale)
	b.launch(b.kernel("attribution", "atp_qk_rows_f64"), heads, n, 1, 128, 0)
	b.args.reset().p(dev(kout)).p(dev(contrib)).p(rows).p(tbase).p(p).p(tlen).i(heads).i(kvHeads).i(pctx)
	b.launch(b.kernel("attribution", "atp_qk_keys_f64"), kvHeads, n, 1, 32, 0)
	b.Free(contrib)
	b.done("QK fix")
}

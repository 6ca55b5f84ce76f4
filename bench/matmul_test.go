package bench

import (
	"fmt"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// MatMul on the linear layers of Llama 3.1 8B, BF16 weights, 2 threads.
//
// Decode (n = 1) is a GEMV that reads every weight once: it reports GB/s of weights, the read
// bandwidth measured just before (read-GB/s, see memory_test.go) and the fraction of it reached
// (x-read). Prefill (n = 64, 256) is a GEMM of 2·n·out·in FLOPs: it reports GFLOP/s, the FMA
// throughput of the same cores in a burst of the same FLOPs after each call (peak-GFLOP/s, the
// median) and the median ratio of the two (x-peak; see againstPeak).
// A small batch (n = 4, 16: several sequences decoding together) takes the GEMV path with its
// four-token kernel and reports GFLOP/s too. The weights are random BF16 of realistic
// magnitude (never zeros, no subnormals), with enough copies that one pass over all of them reads
// at least 1 GiB, far past the caches, and each call uses the next copy.

const matmulThreads = 2

// weightBytes is the least memory the copies of one layer's weights span.
const weightBytes = 1 << 30

// matmulWeights holds the copies of the current shape; one shape at a time bounds the memory.
var matmulWeights struct {
	out, in int
	copies  []*tensor.Tensor
}

func weightsFor(out, in int) []*tensor.Tensor {
	m := &matmulWeights
	if m.out == out && m.in == in {
		return m.copies
	}
	m.copies = nil // let the previous shape go before allocating the next
	size := out * in * 2
	n := max(1, (weightBytes+size-1)/size)
	state := uint64(out)<<32 | uint64(in)
	for range n {
		w := tensor.New(tensor.BF16, out, in)
		u := w.U16()
		for i := 0; i < len(u); i += 4 {
			// xorshift64*: four weights per step, each ±m·2^e with e in [-9, -2].
			state ^= state >> 12
			state ^= state << 25
			state ^= state >> 27
			r := state * 0x2545f4914f6cdd1d
			for k := 0; k < 4 && i+k < len(u); k++ {
				h := uint16(r >> (16 * k))
				u[i+k] = h&0x807f | (0x76+h>>8&7)<<7
			}
		}
		m.copies = append(m.copies, w)
	}
	m.out, m.in = out, in
	return m.copies
}

func benchMatMul(b *testing.B, out, in, n int) { benchMatMulPass(b, out, in, n, matmulForward) }

// matmulPass names what benchMatMulPass times.
type matmulPass uint8

const (
	matmulForward  matmulPass = iota // MatMul
	matmulBackward                   // MatMulBackward's activation gradient
	matmulBF16                       // MatMulBF16, the bf16 compute mode
)

// benchMatMulBackward times the activation gradient of MatMul, dx (n, in) += dy (n, out)·w, the
// backward of a layer whose weights are frozen: the same FLOPs as the forward, with w read across
// its rows' sum instead of along it.
func benchMatMulBackward(b *testing.B, out, in, n int) {
	benchMatMulPass(b, out, in, n, matmulBackward)
}

func benchMatMulPass(b *testing.B, out, in, n int, kind matmulPass) {
	ws := weightsFor(out, in)
	x := tensor.New(tensor.F32, n, in)
	xs := x.F32()
	for i := range xs {
		xs[i] = float32(i%97)/97 - 0.5
	}
	dst := tensor.New(tensor.F32, n, out)
	cpu := tensor.NewCPU(matmulThreads)
	defer cpu.Close()
	pass := func(w *tensor.Tensor) { cpu.MatMul(dst, x, w, nil) }
	if kind == matmulBF16 {
		pass = func(w *tensor.Tensor) { cpu.MatMulBF16(dst, x, w, nil) }
	}
	if kind == matmulBackward {
		// dst plays dy and x plays dx, which grows by about one per call and stays finite.
		for i, d := 0, dst.F32(); i < len(d); i++ {
			d[i] = float32(i%89)/89 - 0.5
		}
		pass = func(w *tensor.Tensor) { cpu.MatMulBackward(x, nil, nil, dst, x, w) }
	}
	pass(ws[0]) // warm up: scratch buffers, page faults of dst
	if n > 1 {
		// The GEMM against the FMA peak of the same cores, each call paired with a burst.
		b.ResetTimer()
		gflops, peak, ratio := againstPeak(b, 2*float64(n)*float64(out)*float64(in), func(i int) { pass(ws[i%len(ws)]) })
		b.ReportMetric(gflops, "GFLOP/s")
		if peak > 0 {
			b.ReportMetric(peak, "peak-GFLOP/s")
			b.ReportMetric(ratio, "x-peak")
		}
		return
	}
	// The GEMV against the read bandwidth, measured right before.
	ceiling := readBandwidth()
	b.ResetTimer()
	for i := range b.N {
		pass(ws[i%len(ws)])
	}
	gbs := float64(b.N) * float64(out*in*2) / b.Elapsed().Seconds() / 1e9
	b.ReportMetric(gbs, "GB/s")
	b.ReportMetric(ceiling, "read-GB/s")
	b.ReportMetric(gbs/ceiling, "x-read")
}

// Llama 3.1 8B: d_model 4096, 32 heads and 8 kv heads of 128, d_mlp 14336, vocabulary 128256.
const (
	dModel = 4096
	dKV    = 1024
	dMLP   = 14336
	vocab  = 128256
)

func BenchmarkMatMulQProj1(b *testing.B)   { benchMatMul(b, dModel, dModel, 1) }
func BenchmarkMatMulQProj4(b *testing.B)   { benchMatMul(b, dModel, dModel, 4) }
func BenchmarkMatMulQProj16(b *testing.B)  { benchMatMul(b, dModel, dModel, 16) }
func BenchmarkMatMulQProj64(b *testing.B)  { benchMatMul(b, dModel, dModel, 64) }
func BenchmarkMatMulQProj256(b *testing.B) { benchMatMul(b, dModel, dModel, 256) }

func BenchmarkMatMulKVProj1(b *testing.B)   { benchMatMul(b, dKV, dModel, 1) }
func BenchmarkMatMulKVProj64(b *testing.B)  { benchMatMul(b, dKV, dModel, 64) }
func BenchmarkMatMulKVProj256(b *testing.B) { benchMatMul(b, dKV, dModel, 256) }

func BenchmarkMatMulOProj1(b *testing.B)   { benchMatMul(b, dModel, dModel, 1) }
func BenchmarkMatMulOProj64(b *testing.B)  { benchMatMul(b, dModel, dModel, 64) }
func BenchmarkMatMulOProj256(b *testing.B) { benchMatMul(b, dModel, dModel, 256) }

func BenchmarkMatMulGateUp1(b *testing.B)   { benchMatMul(b, dMLP, dModel, 1) }
func BenchmarkMatMulGateUp64(b *testing.B)  { benchMatMul(b, dMLP, dModel, 64) }
func BenchmarkMatMulGateUp256(b *testing.B) { benchMatMul(b, dMLP, dModel, 256) }

func BenchmarkMatMulDown1(b *testing.B)   { benchMatMul(b, dModel, dMLP, 1) }
func BenchmarkMatMulDown32(b *testing.B)  { benchMatMul(b, dModel, dMLP, 32) }
func BenchmarkMatMulDown44(b *testing.B)  { benchMatMul(b, dModel, dMLP, 44) } // a whole panel and a half
func BenchmarkMatMulDown64(b *testing.B)  { benchMatMul(b, dModel, dMLP, 64) }
func BenchmarkMatMulDown256(b *testing.B) { benchMatMul(b, dModel, dMLP, 256) }

func BenchmarkMatMulLMHead1(b *testing.B)   { benchMatMul(b, vocab, dModel, 1) }
func BenchmarkMatMulLMHead64(b *testing.B)  { benchMatMul(b, vocab, dModel, 64) }
func BenchmarkMatMulLMHead256(b *testing.B) { benchMatMul(b, vocab, dModel, 256) }

// The activation gradients of the same layers (a frozen-weights backward, as in attribution
// patching), 64 tokens and 44 (tokens are the micro-kernel's rows here: 4 tiles of 12).
func BenchmarkMatMulBackwardQProj64(b *testing.B)  { benchMatMulBackward(b, dModel, dModel, 64) }
func BenchmarkMatMulBackwardGateUp64(b *testing.B) { benchMatMulBackward(b, dMLP, dModel, 64) }
func BenchmarkMatMulBackwardDown64(b *testing.B)   { benchMatMulBackward(b, dModel, dMLP, 64) }
func BenchmarkMatMulBackwardDown44(b *testing.B)   { benchMatMulBackward(b, dModel, dMLP, 44) }

// prefillShapes are the linear layers of real models, for the prefill GEMM at long and short
// prompts: SmolLM2-135M (d_model 576, d_mlp 1536, 3 kv heads of 64), Llama 3.2 1B (2048, 8192,
// 8 kv heads of 64) and Llama 3.1 8B (above).
var prefillShapes = []struct {
	model  string
	layers []struct {
		name    string
		out, in int
	}
}{
	{"smollm2-135m", []struct {
		name    string
		out, in int
	}{{"q_proj", 576, 576}, {"kv_proj", 192, 576}, {"gate_up", 1536, 576}, {"down", 576, 1536}}},
	{"llama-3.2-1b", []struct {
		name    string
		out, in int
	}{{"q_proj", 2048, 2048}, {"kv_proj", 512, 2048}, {"gate_up", 8192, 2048}, {"down", 2048, 8192}}},
	{"llama-3.1-8b", []struct {
		name    string
		out, in int
	}{{"q_proj", dModel, dModel}, {"gate_up", dMLP, dModel}, {"down", dModel, dMLP}}},
}

// BenchmarkMatMulPrefill is the prefill GEMM at 64 to 2048 tokens on every layer shape above,
// against the FMA peak of the same cores (x-peak, see againstPeak).
func BenchmarkMatMulPrefill(b *testing.B) { benchPrefillShapes(b, matmulForward) }

// BenchmarkMatMulPrefillBF16 is the same in the bf16 compute mode (MatMulBF16), still against the
// F32 FMA peak: VDPBF16PS does twice the multiply-adds of an FMA, so its ceiling is x-peak 2.
func BenchmarkMatMulPrefillBF16(b *testing.B) { benchPrefillShapes(b, matmulBF16) }

func benchPrefillShapes(b *testing.B, kind matmulPass) {
	for _, m := range prefillShapes {
		for _, l := range m.layers {
			for _, n := range []int{64, 256, 512, 2048} {
				b.Run(fmt.Sprintf("%s/%s/n=%d", m.model, l.name, n), func(b *testing.B) { benchMatMulPass(b, l.out, l.in, n, kind) })
			}
		}
	}
}

// The decode GEMVs of the Llama-3.2-1B shape (d_model 2048, d_mlp 8192, 8 kv heads of 64,
// vocabulary 128256): one token against the read bandwidth, as above.
func BenchmarkMatMul1B_QProj1(b *testing.B)  { benchMatMul(b, 2048, 2048, 1) }
func BenchmarkMatMul1B_KVProj1(b *testing.B) { benchMatMul(b, 512, 2048, 1) }
func BenchmarkMatMul1B_GateUp1(b *testing.B) { benchMatMul(b, 8192, 2048, 1) }
func BenchmarkMatMul1B_Down1(b *testing.B)   { benchMatMul(b, 2048, 8192, 1) }
func BenchmarkMatMul1B_LMHead1(b *testing.B) { benchMatMul(b, vocab, 2048, 1) }

// The decode GEMVs of SmolLM2-135M (d_model 576, d_mlp 1536, 3 kv heads of 64, vocabulary
// 49152): rows of 1,152 bytes, where what a kernel call costs besides its loads shows most.
func BenchmarkMatMulSmol_QProj1(b *testing.B)  { benchMatMul(b, 576, 576, 1) }
func BenchmarkMatMulSmol_KVProj1(b *testing.B) { benchMatMul(b, 192, 576, 1) }
func BenchmarkMatMulSmol_GateUp1(b *testing.B) { benchMatMul(b, 1536, 576, 1) }
func BenchmarkMatMulSmol_Down1(b *testing.B)   { benchMatMul(b, 576, 1536, 1) }
func BenchmarkMatMulSmol_LMHead1(b *testing.B) { benchMatMul(b, 49152, 576, 1) }

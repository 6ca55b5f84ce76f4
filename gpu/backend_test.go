//go:build cuda

package gpu

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tillerlm/tiller/tensor"
	"github.com/tillerlm/tiller/tensor/tensortest"
)

// newBackend opens the device for a test, with every op synchronised so that a fault names the
// op that caused it; the test skips only when there is no device.
func newBackend(t testing.TB) *Backend {
	t.Helper()
	b, err := New()
	if errors.Is(err, ErrNoDevice) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	b.SyncEachOp = true
	t.Cleanup(b.Close)
	return b
}

// The conformance suite of every backend. Matrix products of more than 8 tokens run on tensor
// cores, which round x to bf16 (or f16): tensortest.BF16Inputs says why that bound. Everything
// else computes in f32 and meets tensortest.F32.
func TestConformance(t *testing.T) {
	b := newBackend(t)
	t.Logf("device: %s, %d SMs", b.Name(), b.SMs())
	tensortest.RunMatMulTolerance(t, b, tensortest.F32, tensortest.BF16Inputs)
}

// ---- helpers of the kernel tests ----

func randomT(rng *rand.Rand, dt tensor.DType, scale float64, shape ...int) *tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return tensor.FromF32(v, shape...).Convert(dt)
}

func poison(b *Backend, shape ...int) *tensor.Tensor {
	h := tensor.New(tensor.F32, shape...)
	for i := range h.F32() {
		h.F32()[i] = float32(math.NaN())
	}
	return b.Upload(h)
}

func back(b *Backend, t *tensor.Tensor) []float32 {
	h := tensor.New(t.DType, t.Shape...)
	b.Download(h, t)
	return h.ToF32()
}

func f64s(t *tensor.Tensor) []float64 {
	v := t.ToF32()
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// roundTo rounds each value to dtype d and back, as a kernel that stages values in d sees them.
func roundTo(v []float64, d tensor.DType) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		f := float32(x)
		switch d {
		case tensor.BF16:
			f = tensor.F32FromBF16(tensor.BF16FromF32(f))
		case tensor.F16:
			f = tensor.F32FromF16(tensor.F16FromF32(f))
		}
		out[i] = float64(f)
	}
	return out
}

// linear is the f64 reference of y = x·wᵀ + bias.
func linear(x, w, bias []float64, n, in, out int) []float64 {
	y := make([]float64, n*out)
	for i := 0; i < n; i++ {
		for r := 0; r < out; r++ {
			var s float64
			for k := 0; k < in; k++ {
				s += x[i*in+k] * w[r*in+k]
			}
			if bias != nil {
				s += bias[r]
			}
			y[i*out+r] = s
		}
	}
	return y
}

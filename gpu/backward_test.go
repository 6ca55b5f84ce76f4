//go:build cuda

package gpu

import (
	"testing"

	"github.com/tillerlm/tiller/tensor/tensortest"
)

// The backward conformance suite: every activation-gradient op and the explicit attention path
// against the CPU in F64. The matrix products are at f32 precision here (exact products,
// kernels/gemm_exact.cu), so everything meets tensortest.F32.
func TestBackwardConformance(t *testing.T) {
	b := newBackend(t)
	tensortest.RunBackward(t, b, tensortest.F32)
}

package tensortest

import (
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// The CPU's F32 backward against its F64 backward: the suite's reference is sound, and the F32
// path computes what the F64 one does.
func TestCPUBackward(t *testing.T) {
	RunBackward(t, tensor.NewCPU(2), F32)
}

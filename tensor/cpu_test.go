package tensor_test

import (
	"fmt"
	"testing"

	"github.com/tillerlm/tiller/tensor"
	"github.com/tillerlm/tiller/tensor/tensortest"
)

// The CPU backend passes the conformance suite with F32 and with F64 activations, with one thread
// (everything inline), two, and an odd number that splits work unevenly.
func TestCPUConformance(t *testing.T) {
	for _, threads := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			b := tensor.NewCPU(threads)
			defer b.Close()
			t.Run("F32", func(t *testing.T) { tensortest.Run(t, b, tensortest.F32) })
			t.Run("F64", func(t *testing.T) { tensortest.RunDType(t, b, tensor.F64, tensortest.F64) })
		})
	}
}

// A BF16 KV cache under F32 activations: StoreKV rounds keys and values to bfloat16 and Attention
// reads them back exactly.
func TestCPUBF16KVCache(t *testing.T) {
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			b := tensor.NewCPU(threads)
			defer b.Close()
			tensortest.RunAttentionCache(t, b, tensor.BF16, tensortest.F32)
		})
	}
}

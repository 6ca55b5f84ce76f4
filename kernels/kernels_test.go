package kernels

import (
	"regexp"
	"strings"
	"testing"
)

// Every family's PTX is there, targets what the driver can JIT for Hopper, and declares the
// entry points package gpu launches (a renamed kernel fails here, not on a lent GPU).
func TestPTX(t *testing.T) {
	want := map[string][]string{
		"attention":   {"attention_decode_f32", "attention_combine_f32", "attention_prefill_f32_d64", "attention_prefill_f32_d128", "attention_prefill_f32_d256"},
		"elementwise": {"silu_mul_f32", "add_f32"},
		"embedding":   {"embedding_f32", "embedding_bf16", "embedding_f16"},
		"gemm":        {"gemm_bf16", "gemm_f16", "gemm_tiled_f32", "gemm_tiled_bf16", "gemm_tiled_f16"},
		"gemv":        {"gemv_n1_bf16", "gemv_n8_f32", "gemv_swiglu_n1_bf16", "gemv_swiglu_n8_f16"},
		"kvcache":     {"kv_store_f32"},
		"random":      {"random_bf16", "random_f32"},
		"rmsnorm":     {"rmsnorm_f32", "rmsnorm_bf16", "rmsnorm_f16", "residual_rmsnorm_bf16"},
		"rope":        {"rope_f32"},
		"sampling":    {"argmax_f32", "advance_i32"},
		"softmax":     {"softmax_f32"},
	}
	entry := regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`)
	for family, names := range want {
		src, err := PTX(family)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(src, ".target sm_80") {
			t.Errorf("%s.ptx does not target sm_80 (compute_80)", family)
		}
		have := map[string]bool{}
		for _, m := range entry.FindAllStringSubmatch(src, -1) {
			have[m[1]] = true
		}
		for _, n := range names {
			if !have[n] {
				t.Errorf("%s.ptx has no entry %s", family, n)
			}
		}
	}
	if _, err := PTX("nonesuch"); err == nil {
		t.Error("PTX of an unknown family: no error")
	}
}

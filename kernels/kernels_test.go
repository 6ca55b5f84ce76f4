package kernels

import (
	"regexp"
	"strings"
	"testing"
)

// Every family's PTX is there, targets what the driver can JIT for Hopper (compute_80, or
// compute_90 for the families that use programmatic dependent launch), and declares the entry
// points package gpu launches (a renamed kernel fails here, not on a lent GPU).
func TestPTX(t *testing.T) {
	want := map[string][]string{
		"attention": {"attention_decode_f32", "attention_combine_f32", "attention_prefill_f32_d64", "attention_prefill_f32_d128", "attention_prefill_f32_d256"},
		"attention_backward": {"attention_backward_rows_f32_d64", "attention_backward_rows_f32_d128", "attention_backward_rows_f32_d256",
			"attention_backward_keys_f32_d64", "attention_backward_keys_f32_d128", "attention_backward_keys_f32_d256", "attention_pattern_f32",
			"attention_apply_f32", "attention_apply_backward_rows_f32", "attention_apply_backward_keys_f32", "attention_pattern_backward_rows_f32",
			"attention_pattern_backward_keys_f32"},
		"attribution": {"atp_scores_f64", "patch_rows_f32", "metric_logits_f32", "atp_qk_rows_f64", "atp_qk_keys_f64"},
		"elementwise": {"silu_mul_f32", "add_f32", "silu_mul_backward_f32"},
		"embedding":   {"embedding_f32", "embedding_bf16", "embedding_f16", "embedding_backward_f32"},
		"gemm": {"gemm_bf16", "gemm_f16", "gemm_tiled_f32", "gemm_tiled_bf16", "gemm_tiled_f16", "gemm_pipe_bf16", "round_bf16", "gemm_splitk_m32_bf16", "gemm_splitk_m64_bf16", "gemm_splitk_m128_bf16", "gemm_splitk_m64_f16", "splitk_reduce_f32",
			"gemm_tiled_dx_f32", "gemm_tiled_dx_bf16", "gemm_tiled_dx_f16"},
		"gemm_exact": {"gemm_exact_m32_bf16", "gemm_exact_m64_bf16", "gemm_exact_dx_m32_bf16", "gemm_exact_dx_m64_bf16", "gemm_exact_reduce_f32"},
		"gemv":       {"gemv_n1_bf16", "gemv_n8_f32", "gemv_swiglu_n1_bf16", "gemv_swiglu_n8_f16"},
		"kvcache":    {"kv_store_f32"},
		"matvec":     {"matvec_n1_bf16", "matvec_n8_f32", "matvec_swiglu_n1_bf16", "matvec_rms_n1_bf16", "matvec_rms_swiglu_n1_f16", "matvec_rms_n1_f32"},
		"decode":     {"attention_decode_rope_f32", "argmax_advance_f32", "hold_ns"},
		"random":     {"random_bf16", "random_f32"},
		"rmsnorm":    {"rmsnorm_f32", "rmsnorm_bf16", "rmsnorm_f16", "residual_rmsnorm_bf16", "rmsnorm_backward_f32", "rmsnorm_backward_bf16", "rmsnorm_backward_f16"},
		"rope":       {"rope_f32", "rope_backward_f32"},
		"sampling":   {"argmax_f32", "advance_i32"},
		"softmax":    {"softmax_f32"},
	}
	// The families package gpu launches with programmatic dependent launch: compute_90 PTX.
	sm90 := map[string]bool{"matvec": true, "decode": true}
	entry := regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`)
	for family, names := range want {
		src, err := PTX(family)
		if err != nil {
			t.Fatal(err)
		}
		target := ".target sm_80"
		if sm90[family] {
			target = ".target sm_90"
		}
		if !strings.Contains(src, target) {
			t.Errorf("%s.ptx does not say %s", family, target)
		}
		if strings.Contains(src, "griddepcontrol") != sm90[family] {
			t.Errorf("%s.ptx: programmatic dependent launch (griddepcontrol) is for the compute_90 families only", family)
		}
		if sm90[family] {
			// package gpu may launch any kernel of these families with programmatic dependent
			// launch, which is safe only if every one of them waits on its predecessor.
			for _, body := range strings.Split(src, ".entry ")[1:] {
				if !strings.Contains(body, "griddepcontrol.wait") {
					t.Errorf("%s.ptx: kernel %s never executes griddepcontrol.wait", family, strings.SplitN(body, "(", 2)[0])
				}
			}
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

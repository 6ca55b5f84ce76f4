package kernels

import (
	"crypto/sha256"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Every family's PTX is there, targets what the driver can JIT for Hopper (compute_80, compute_90
// for the families that use programmatic dependent launch, compute_90a for the wgmma GEMM), and
// declares the entry
// points package gpu launches (a renamed kernel fails here, not on a lent GPU).
func TestPTX(t *testing.T) {
	want := map[string][]string{
		"attention": {"attention_decode_gqa_f32_d128", "attention_decode_gqa_f32_d256", "attention_decode_gqa_bf16_d128", "attention_decode_gqa_bf16_d256",
			"attention_prefill_f32_d64", "attention_prefill_f32_d128", "attention_prefill_f32_d256", "attention_prefill_mma_bf16_d64",
			"attention_prefill_mma_bf16_d128", "attention_prefill_fa_kvbf16_d64", "attention_prefill_fa_kvbf16_d128"},
		"attention_backward": {"attention_backward_rows_f32_d64", "attention_backward_rows_f32_d128", "attention_backward_rows_f32_d256",
			"attention_backward_keys_f32_d64", "attention_backward_keys_f32_d128", "attention_backward_keys_f32_d256", "attention_pattern_f32",
			"attention_apply_f32", "attention_apply_backward_rows_f32", "attention_apply_backward_keys_f32", "attention_pattern_backward_rows_f32",
			"attention_pattern_backward_keys_f32"},
		"attribution": {"atp_scores_f64", "patch_rows_f32", "metric_logits_f32", "atp_qk_rows_f64", "atp_qk_keys_f64"},
		"elementwise": {"silu_mul_f32", "add_f32", "silu_mul_backward_f32"},
		"embedding":   {"embedding_f32", "embedding_bf16", "embedding_f16", "embedding_backward_f32"},
		"gemm": {"gemm_bf16", "gemm_f16", "gemm_tiled_f32", "gemm_tiled_bf16", "gemm_tiled_f16", "gemm_pipe_bf16", "round_bf16", "gemm_splitk_m32_bf16", "gemm_splitk_m64_bf16", "gemm_splitk_m128_bf16", "gemm_splitk_m64_f16", "splitk_reduce_f32",
			"gemm_tiled_dx_f32", "gemm_tiled_dx_bf16", "gemm_tiled_dx_f16"},
		"gemm_wgmma": {"gemm_wgmma_bf16"},
		"gemm_exact": {"gemm_exact_m32_bf16", "gemm_exact_m64_bf16", "gemm_exact_dx_m32_bf16", "gemm_exact_dx_m64_bf16", "gemm_exact_reduce_f32"},
		"gemv":       {"gemv_n1_bf16", "gemv_n8_f32", "gemv_swiglu_n1_bf16", "gemv_swiglu_n8_f16"},
		"kvcache":    {"kv_store_f32", "kv_store_bf16"},
		"steer":      {"steer_add_f32", "steer_delta_f32"},
		"matvec":     {"matvec_n1_bf16", "matvec_n8_f32", "matvec_swiglu_n1_bf16", "matvec_rms_n1_bf16", "matvec_rms_swiglu_n1_f16", "matvec_rms_n1_f32"},
		"decode": {"attention_decode_rope_gqa_f32_d128", "attention_decode_rope_gqa_f32_d256", "attention_decode_rope_gqa_bf16_d128",
			"attention_decode_rope_gqa_bf16_d256", "argmax_advance_f32", "hold_ns"},
		"random":   {"random_bf16", "random_f32"},
		"rmsnorm":  {"rmsnorm_f32", "rmsnorm_bf16", "rmsnorm_f16", "residual_rmsnorm_bf16", "rmsnorm_backward_f32", "rmsnorm_backward_bf16", "rmsnorm_backward_f16"},
		"rope":     {"rope_f32", "rope_backward_f32"},
		"sampling": {"argmax_f32", "advance_i32"},
		"softmax":  {"softmax_f32"},
	}
	// The families package gpu launches with programmatic dependent launch: compute_90 PTX.
	sm90 := map[string]bool{"matvec": true, "decode": true}
	entry := regexp.MustCompile(`(?m)^\.visible \.entry (\w+)\(`)
	for family, names := range want {
		src, err := PTX(family)
		if err != nil {
			t.Fatal(err)
		}
		target := ".target sm_80\n"
		switch {
		case sm90[family]:
			target = ".target sm_90\n"
		case family == "gemm_wgmma":
			target = ".target sm_90a\n"
		}
		if !strings.Contains(src, target) {
			t.Errorf("%s.ptx does not say %q", family, target)
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

// Every committed PTX file was generated from the sources as they are: it ends with the sha256 of
// its .cu followed by the headers it includes (directly or through another header) in name order,
// which `make ptx` appends (scripts/ptx-source-hash.sh). A source changed without `make ptx` (or a
// PTX file edited by hand) fails here rather than on a GPU.
func TestPTXSources(t *testing.T) {
	last := regexp.MustCompile(`// source sha256 ([0-9a-f]{64})\n$`)
	for _, family := range Families() {
		want, err := sourceHash(family + ".cu")
		if err != nil {
			t.Fatalf("%s.ptx: %v", family, err)
		}
		ptx, _ := PTX(family)
		m := last.FindStringSubmatch(ptx)
		switch {
		case m == nil:
			t.Errorf("%s.ptx does not end with the hash of its sources: run make ptx", family)
		case m[1] != want:
			t.Errorf("%s.ptx was made from other sources (hash %s…, the sources' %s…): run make ptx", family, m[1][:12], want[:12])
		}
	}
}

var include = regexp.MustCompile(`(?m)^#include "([^"]+\.cuh)"`)

// sourceHash is the sha256 of the .cu file cu and the headers it includes, as
// scripts/ptx-source-hash.sh computes it.
func sourceHash(cu string) (string, error) {
	src, err := os.ReadFile(cu)
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	var headers []string
	for todo := [][]byte{src}; len(todo) > 0; todo = todo[1:] {
		for _, m := range include.FindAllSubmatch(todo[0], -1) {
			name := string(m[1])
			if seen[name] {
				continue
			}
			seen[name] = true
			headers = append(headers, name)
			b, err := os.ReadFile(name)
			if err != nil {
				return "", fmt.Errorf("a header of %s: %v", cu, err)
			}
			todo = append(todo, b)
		}
	}
	sort.Strings(headers)
	h := sha256.New()
	h.Write(src)
	for _, name := range headers {
		b, _ := os.ReadFile(name)
		h.Write(b)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

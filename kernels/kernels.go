// Package kernels holds tiller's CUDA kernels: the CUDA C sources (*.cu, one file per op family,
// each opening with the math, shapes and memory traffic of its kernels and the CPU reference it
// matches), and the PTX that `make ptx` generates from them for compute_80 (compute_90 for the
// fused decode step's families, matvec and decode; compute_90a for Hopper's prefill GEMM,
// gemm_wgmma) — committed, so that building and running need no CUDA compiler, only the driver,
// which JITs the PTX for the card.
//
// This package is plain Go with no build tag: it only embeds text. Package gpu loads a family's
// module the first time one of its kernels runs.
package kernels

import (
	"embed"
	"fmt"
	"sort"
	"strings"
)

//go:embed *.ptx
var files embed.FS

// PTX returns the PTX of an op family: the name of its .cu file without the extension
// ("gemv", "attention", …).
func PTX(family string) (string, error) {
	b, err := files.ReadFile(family + ".ptx")
	if err != nil {
		return "", fmt.Errorf("kernels: no PTX for op family %q (have %s)", family, strings.Join(Families(), ", "))
	}
	return string(b), nil
}

// Families lists the op families with PTX, sorted.
func Families() []string {
	entries, _ := files.ReadDir(".")
	var out []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".ptx"); ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

//go:build !cuda

package main

import (
	"io"

	"github.com/tillerlm/tiller/llama"
)

// The default build has no GPU backend: the GPU commands say so plainly.

func profile(*profileOptions, io.Writer, io.Writer) error { return errNoCUDA("this command") }

func cudaRunner(*llama.Model) (*llama.Runner, func(), error) {
	return nil, nil, errNoCUDA("--device cuda")
}

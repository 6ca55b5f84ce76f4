//go:build cuda

// Package cuinit initialises the CUDA driver before gorgonia.org/cu does, so that a cuda binary on
// a machine without a usable GPU says so plainly instead of printing a driver code: gorgonia/cu's
// package init calls cuInit and exits the process when it fails. Go initialises packages in import
// path order among those whose imports are ready; this package imports only what cu imports too
// ("C", os), and "github.com/…" sorts before "gorgonia.org/…", so it runs first. A test binary
// (name ending in .test) exits 0 after the message — "no device" is a skip for tests — and any
// other binary exits 1.
package cuinit

// #cgo LDFLAGS: -lcuda
// #include <cuda.h>
import "C"
import (
	"os"
	"strconv"
	"strings"
)

func init() {
	r := C.cuInit(0)
	if r == C.CUDA_SUCCESS {
		return
	}
	var name *C.char
	reason := "CUresult " + strconv.Itoa(int(r))
	if C.cuGetErrorName(r, &name) == C.CUDA_SUCCESS {
		reason = C.GoString(name)
	}
	os.Stderr.WriteString("no CUDA device: the driver reports " + reason + "\n")
	if strings.HasSuffix(os.Args[0], ".test") {
		os.Stderr.WriteString("no CUDA device: skipping every test of this cuda test binary\n")
		os.Exit(0)
	}
	os.Exit(1)
}

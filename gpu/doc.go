// Package gpu is tiller's CUDA backend: a tensor.Backend whose ops launch the hand-written kernels
// of package kernels through gorgonia.org/cu, on one device, one primary context and one stream.
//
// Every file but this one is behind the `cuda` build tag (gorgonia/cu's package init exits the
// process on a machine without a GPU, and linking needs libcuda), so the default build and
// `go test ./...` never touch CUDA. Build with
//
//	CGO_CFLAGS=-I$PWD/build/cuda/include CGO_LDFLAGS=-L$PWD/build/cuda/lib go build -tags cuda
//
// (`make device-check-build` does this for the test and bench binaries). The files, one concern
// each: backend.go (device, context, stream, New/Close, Alloc/Upload/Download), pool.go (the
// caching device-memory pool), staging.go (host int arrays to the device through a pinned ring),
// module.go (lazy PTX modules and the launch helper), driver.go (the cgo our own for what
// gorgonia/cu lacks, cuLaunchKernelEx for programmatic dependent launch among them), launch.go
// (one launcher per kernel), ops.go and attention.go (the tensor.Backend ops), graph.go (CUDA
// graph capture and replay), timing.go (events), decoder.go (a device-resident greedy decode
// loop replayed as one CUDA graph per token, in a generic and a fused form), profile.go (each
// kernel of a decode step timed with events).
package gpu

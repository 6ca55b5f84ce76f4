//go:build !amd64 || purego

package tensor

// archKernels returns no assembly kernels: the portable Go runs everywhere but amd64.
func archKernels() []*kernels { return nil }

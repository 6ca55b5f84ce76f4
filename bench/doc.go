// Package bench holds the benchmarks of tiller's kernels and the measurements of the machine they
// are reported against (memory read and copy bandwidth, FMA throughput), taken in the same run:
//
//	go test ./bench -run X -bench . -benchtime 1s
//
// Set TILLER_KERNELS=go, avx2 or avx512 to time another set of CPU kernels than the fastest.
package bench

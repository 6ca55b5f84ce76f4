//go:build amd64 && !purego

package bench

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// readAVX2 folds lines cache lines at each of p0..p3 into one word, moving each pointer step
// bytes after every line.
//
//go:noescape
func readAVX2(p0, p1, p2, p3 *byte, lines, step int) uint64

// readWords returns a fold of every word of v, read with vector loads where the CPU has them (a
// scalar Go loop falls short of the memory bandwidth): with streams = 4 the four quarters of v side
// by side, otherwise front to back.
func readWords(v []uint64, streams int) uint64 {
	if !cpu.X86.HasAVX2 {
		return readWordsGo(v)
	}
	q := len(v) / 32 * 8 // words per quarter, whole cache lines
	if q == 0 {
		return readWordsGo(v)
	}
	p := func(i int) *byte { return (*byte)(unsafe.Pointer(&v[i])) }
	var s uint64
	if streams == 4 {
		s = readAVX2(p(0), p(q), p(2*q), p(3*q), q/8, 64)
	} else {
		s = readAVX2(p(0), p(8), p(16), p(24), q/8, 256)
	}
	return s ^ readWordsGo(v[4*q:])
}

//go:noescape
func fmaAVX512(iters int) float32

//go:noescape
func fmaAVX2(iters int) float32

// fmaFLOPs runs iters steps of the widest FMA loop this CPU has and returns the FLOPs done, or 0
// without FMA.
func fmaFLOPs(iters int) float64 {
	switch {
	case cpu.X86.HasAVX512F:
		fmaAVX512(iters)
		return float64(iters) * 16 * 16 * 2
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		fmaAVX2(iters)
		return float64(iters) * 12 * 8 * 2
	}
	return 0
}

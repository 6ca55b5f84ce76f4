//go:build !amd64 || purego

package bench

// readWords returns a fold of every word of v, front to back.
func readWords(v []uint64, streams int) uint64 { return readWordsGo(v) }

// fmaFLOPs has no portable FMA loop: 0 says the peak is unknown.
func fmaFLOPs(iters int) float64 { return 0 }

package bench

import (
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The machine's memory ceiling, measured in the same run as the kernels so that a kernel's GB/s can
// be stated as a fraction of it: a plain copy (bytes read + bytes written) and a plain single-pass
// read, each over 1 GiB (far past the caches) split between two goroutines. The read comes in two
// forms: each goroutine reading its half front to back (one stream per core), and reading the four
// quarters of its half side by side (four streams per core, as the GEMV does), which on the
// reference machine reaches about 42 GB/s against 30: the ceiling that x-read refers to. (Eight
// streams per core read no faster than four there.) The arithmetic ceiling, for the GEMM, is an
// FMA loop on registers at the end of this file.

const (
	memBytes   = 1 << 30
	memThreads = 2
)

var memBuffers = sync.OnceValues(func() (src, dst []uint64) {
	src = make([]uint64, memBytes/8)
	dst = make([]uint64, memBytes/8)
	for i := range src {
		src[i] = uint64(i) * 0x9e3779b97f4a7c15 // touch every page, never zero
		dst[i] = 1
	}
	return src, dst
})

// parallel runs f on memThreads equal parts of [0, n) and waits.
func parallel(n int, f func(lo, hi int)) {
	var wg sync.WaitGroup
	for t := range memThreads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(t*n/memThreads, (t+1)*n/memThreads)
		}()
	}
	wg.Wait()
}

// sink keeps the read loop's result alive.
var sink uint64

func memRead(streams int) {
	src, _ := memBuffers()
	var mu sync.Mutex
	parallel(len(src), func(lo, hi int) {
		s := readWords(src[lo:hi], streams)
		mu.Lock()
		sink += s
		mu.Unlock()
	})
}

func memCopy() {
	src, dst := memBuffers()
	parallel(len(src), func(lo, hi int) { copy(dst[lo:hi], src[lo:hi]) })
}

// BenchmarkMemoryRead is one pass of reads over 1 GiB, four streams per core: GB/s read.
func BenchmarkMemoryRead(b *testing.B) { benchRead(b, 4) }

// BenchmarkMemoryReadOneStream is the same pass with one stream per core.
func BenchmarkMemoryReadOneStream(b *testing.B) { benchRead(b, 1) }

func benchRead(b *testing.B, streams int) {
	memBuffers()
	b.SetBytes(memBytes)
	for b.Loop() {
		memRead(streams)
	}
	b.ReportMetric(float64(b.N)*memBytes/b.Elapsed().Seconds()/1e9, "GB/s")
}

// BenchmarkMemoryCopy copies 1 GiB: GB/s counts the bytes read and the bytes written.
func BenchmarkMemoryCopy(b *testing.B) {
	memBuffers()
	b.SetBytes(2 * memBytes)
	for b.Loop() {
		memCopy()
	}
	b.ReportMetric(float64(b.N)*2*memBytes/b.Elapsed().Seconds()/1e9, "GB/s")
}

// readBandwidth is the best of three four-stream read passes in GB/s: the ceiling that a GEMV
// benchmark reports itself against, measured right before it so that both see the same machine
// (on a shared host the bandwidth left to us changes from minute to minute).
func readBandwidth() float64 {
	memBuffers()
	best := 0.0
	for range 3 {
		start := time.Now()
		memRead(4)
		best = max(best, memBytes/time.Since(start).Seconds()/1e9)
	}
	return best
}

// fmaRun runs the FMA loop once on each of memThreads goroutines and returns the FLOPs done.
func fmaRun() float64 { return fmaSteps(1 << 20) }

// fmaSteps runs iters steps of the FMA loop on each of memThreads goroutines and returns the
// FLOPs done.
func fmaSteps(iters int) float64 {
	var flops [memThreads]float64
	parallel(memThreads, func(t, _ int) { flops[t] = fmaFLOPs(iters) })
	total := 0.0
	for _, f := range flops {
		total += f
	}
	return total
}

// againstPeak times b.N calls of f, each doing flops FLOPs on the cores, and pairs each call with
// an FMA burst of the same FLOPs right after it (outside the timer). Both are measured in CPU time
// (this process's user+system seconds) as well as wall time: on a shared machine other processes
// take the cores for slices of every second, which stretches wall time at random but leaves the
// work done per CPU-second alone, so x-peak, the median over calls of the ratio of the two per
// CPU-second rates, is a property of the code; peak is the median burst in wall GFLOP/s on all
// threads. It returns the calls' wall GFLOP/s over the timed total, peak and x-peak (0 and 0
// without an FMA loop).
func againstPeak(b *testing.B, flops float64, f func(i int)) (gflops, peak, ratio float64) {
	perStep := fmaFLOPs(1) * memThreads
	var peaks, ratios []float64
	for i := range b.N {
		c0 := cpuSeconds()
		f(i)
		rate := flops / (cpuSeconds() - c0)
		if perStep > 0 {
			b.StopTimer()
			start, c0 := time.Now(), cpuSeconds()
			done := fmaSteps(max(1, int(flops/perStep)))
			peaks = append(peaks, done/time.Since(start).Seconds()/1e9)
			ratios = append(ratios, rate/(done/(cpuSeconds()-c0)))
			b.StartTimer()
		}
	}
	gflops = float64(b.N) * flops / b.Elapsed().Seconds() / 1e9
	if len(peaks) == 0 {
		return gflops, 0, 0
	}
	slices.Sort(peaks)
	slices.Sort(ratios)
	return gflops, peaks[len(peaks)/2], ratios[len(ratios)/2]
}

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// fmaPeak is the best of three FMA runs in GFLOP/s: the ceiling that a GEMM benchmark reports
// itself against, measured right before it (0 where there is no FMA loop for this CPU).
func fmaPeak() float64 {
	best := 0.0
	for range 3 {
		start := time.Now()
		flops := fmaRun()
		best = max(best, flops/time.Since(start).Seconds()/1e9)
	}
	return best
}

// BenchmarkFMAPeak is the arithmetic ceiling: F32 FMAs from registers, no memory, on memThreads
// goroutines.
func BenchmarkFMAPeak(b *testing.B) {
	flops := 0.0
	for b.Loop() {
		flops += fmaRun()
	}
	b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

//go:build cuda

package gpu

import (
	"fmt"
	"sort"

	"gorgonia.org/cu"
)

// Time runs fn warmup times, then reps times between device events, and returns the median time
// of one run in milliseconds. fn queues work on the backend's stream (ops, graph launches).
func (b *Backend) Time(warmup, reps int, fn func()) (float64, error) {
	for i := 0; i < warmup; i++ {
		fn()
	}
	if err := b.Sync(); err != nil {
		return 0, err
	}
	defer b.enter()()
	start, err := cu.MakeEvent(cu.DefaultEvent)
	if err != nil {
		return 0, fmt.Errorf("gpu: cuEventCreate: %v", err)
	}
	defer cu.DestroyEvent(&start)
	stop, err := cu.MakeEvent(cu.DefaultEvent)
	if err != nil {
		return 0, fmt.Errorf("gpu: cuEventCreate: %v", err)
	}
	defer cu.DestroyEvent(&stop)
	times := make([]float64, 0, reps)
	for i := 0; i < reps; i++ {
		if err := start.Record(b.stream); err != nil {
			return 0, fmt.Errorf("gpu: cuEventRecord: %v", err)
		}
		fn()
		if err := stop.Record(b.stream); err != nil {
			return 0, fmt.Errorf("gpu: cuEventRecord: %v", err)
		}
		if err := stop.Synchronize(); err != nil {
			return 0, fmt.Errorf("gpu: timed work failed on the device: %v", err)
		}
		ms, err := start.Elapsed(stop)
		if err != nil {
			return 0, fmt.Errorf("gpu: cuEventElapsedTime: %v", err)
		}
		times = append(times, ms)
		b.stage.reset()
	}
	sort.Float64s(times)
	return times[len(times)/2], nil
}

// CopyBandwidth measures device-to-device copy bandwidth with cuMemcpyDtoDAsync of a buffer of
// the given size: bytes read plus bytes written per second, in GB/s (1e9), the ceiling that
// DESIGN.md measures decode against. Also returns the median milliseconds of one copy.
func (b *Backend) CopyBandwidth(bytes int64, reps int) (gbps, ms float64, err error) {
	// The allocations and frees are driver calls too: they need the context current on this
	// thread, as every op has it.
	leave := b.enter()
	src, err := b.pool.get(bytes, "copy benchmark source")
	if err != nil {
		leave()
		return 0, 0, err
	}
	dst, err := b.pool.get(bytes, "copy benchmark destination")
	if err != nil {
		b.pool.put(src)
		leave()
		return 0, 0, err
	}
	err = cu.MemsetD8Async(src, 0x5a, bytes, b.stream) // not zeros: never time on zeros
	leave()
	defer func() {
		defer b.enter()()
		b.pool.put(src)
		b.pool.put(dst)
		b.pool.release()
	}()
	if err != nil {
		return 0, 0, fmt.Errorf("gpu: memset: %v", err)
	}
	var copyErr error
	ms, err = b.Time(3, reps, func() {
		defer b.enter()()
		if e := cu.MemcpyDtoDAsync(dst, src, bytes, b.stream); e != nil && copyErr == nil {
			copyErr = e
		}
	})
	if err == nil {
		err = copyErr
	}
	return 2 * float64(bytes) / (ms * 1e-3) / 1e9, ms, err
}

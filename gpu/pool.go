//go:build cuda

package gpu

import (
	"fmt"

	"gorgonia.org/cu"
)

// pool is a caching allocator of device memory. cuMemAlloc and cuMemFree synchronise the device
// and take tens of microseconds, so freed blocks are kept in per-size free lists and handed out
// again to requests of the same size class. Sizes round up to 512 bytes below 1 MiB and to
// 64 KiB above, bounding the waste per block. On out-of-memory the cached blocks are freed and
// the allocation retried once; if it still fails the error names the allocation.
//
// Reuse is safe without events because the backend has one stream: work that used a block
// before it was freed is ordered before any work that uses it again.
type pool struct {
	free   map[int64][]cu.DevicePtr // size class → blocks no tensor holds
	size   map[cu.DevicePtr]int64   // every block the pool made → its size class
	inUse  int64
	cached int64
}

func newPool() *pool {
	return &pool{free: map[int64][]cu.DevicePtr{}, size: map[cu.DevicePtr]int64{}}
}

func sizeClass(bytes int64) int64 {
	bytes = max(bytes, 256) // every tensor gets an address, also an empty one
	if bytes < 1<<20 {
		return (bytes + 511) &^ 511
	}
	return (bytes + 1<<16 - 1) &^ (1<<16 - 1)
}

func (p *pool) get(bytes int64, what string) (cu.DevicePtr, error) {
	c := sizeClass(bytes)
	if l := p.free[c]; len(l) > 0 {
		d := l[len(l)-1]
		p.free[c] = l[:len(l)-1]
		p.cached -= c
		p.inUse += c
		return d, nil
	}
	d, err := cu.MemAlloc(c)
	if err != nil && p.cached > 0 {
		p.release()
		d, err = cu.MemAlloc(c)
	}
	if err != nil {
		if err != cu.OutOfMemory {
			return 0, fmt.Errorf("gpu: allocating %s (%d bytes): %v", what, bytes, err)
		}
		free, total, _ := cu.MemInfo()
		return 0, fmt.Errorf("gpu: out of device memory allocating %s (%d bytes): %v; the pool holds %d bytes in use, the device has %d of %d bytes free",
			what, bytes, err, p.inUse, free, total)
	}
	p.size[d] = c
	p.inUse += c
	return d, nil
}

func (p *pool) put(d cu.DevicePtr) {
	c, ok := p.size[d]
	if !ok {
		panic(fmt.Sprintf("gpu: free of device address %#x that the pool did not allocate (a view?)", uintptr(d)))
	}
	p.free[c] = append(p.free[c], d)
	p.inUse -= c
	p.cached += c
}

// release frees the cached blocks (not those in use).
func (p *pool) release() {
	for c, l := range p.free {
		for _, d := range l {
			cu.MemFree(d)
			delete(p.size, d)
		}
		delete(p.free, c)
	}
	p.cached = 0
}

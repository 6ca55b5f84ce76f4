//go:build cuda

package gpu

import (
	"fmt"

	"github.com/tillerlm/tiller/tensor"
)

// arena holds the temporaries (Backend.scratch) of ops recorded into a CUDA graph. A graph keeps
// the addresses it was recorded with, so its temporaries must stay its own for as long as it may
// be replayed: from the pool they would go back at once and be handed to other tensors, which the
// replays would then overwrite. The decode step measures what a recording takes with a dry run
// (fake addresses, nothing launched), then records into device memory of that size. Bump
// allocation; a recording starts from the front again (graphs replay one at a time, in order, on
// one stream, so they may share it).
type arena struct {
	buf       *tensor.Tensor // nil while measuring
	size, off int64          // bytes held, bytes taken by the current recording
	peak      int64          // the most a recording took
}

// arenaFake is where a measuring arena's addresses start: never device memory a kernel reads,
// since a dry run launches nothing.
const arenaFake = 1 << 56

func (a *arena) base() uint64 {
	if a.buf == nil {
		return arenaFake
	}
	return a.buf.Dev
}

// take returns the device address of bytes more, 256-byte aligned.
func (a *arena) take(bytes int64) uint64 {
	at := (a.off + 255) &^ 255
	a.off = at + bytes
	a.peak = max(a.peak, a.off)
	if a.buf != nil && a.off > a.size {
		panic(fmt.Sprintf("gpu: a graph's temporaries need %d bytes; its arena holds %d (measured by a dry run)", a.off, a.size))
	}
	return a.base() + uint64(at)
}

// owns reports whether p is an address take gave out.
func (a *arena) owns(p uint64) bool {
	lim := a.size
	if a.buf == nil {
		lim = 1 << 40
	}
	return p >= a.base() && p < a.base()+uint64(lim)
}

// reserve makes the arena hold at least what the largest recording measured took.
func (a *arena) reserve(b *Backend) error {
	if a.buf != nil && a.size >= a.peak {
		return nil
	}
	if a.buf != nil {
		b.Free(a.buf)
	}
	size := (max(a.peak, 256) + 3) &^ 3
	buf, err := b.AllocErr("decode step temporaries", tensor.I32, int((size+3)/4))
	if err != nil {
		a.buf = nil
		return err
	}
	a.buf, a.size = buf, size
	return nil
}

// free gives the arena's memory back.
func (a *arena) free(b *Backend) {
	if a.buf != nil {
		b.Free(a.buf)
		a.buf, a.size = nil, 0
	}
}

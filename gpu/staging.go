//go:build cuda

package gpu

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// staging moves the small host int arrays of an op (token ids, positions, cache rows, block
// tables) to the device: they are written into a pinned host ring and copied asynchronously to
// the same offset of a device buffer, so an op neither allocates nor waits. A region is not
// written again until the stream has been synchronised past its copy (Download and Sync reset
// the ring; a full ring waits for the stream first).
type staging struct {
	host []byte       // pinned
	dev  cu.DevicePtr // same size
	off  int
}

func (s *staging) init(bytes int) error {
	h, err := hostAlloc(bytes)
	if err != nil {
		return err
	}
	d, err := cu.MemAlloc(int64(bytes))
	if err != nil {
		hostFree(h)
		return fmt.Errorf("cuMemAlloc of %d bytes: %v", bytes, err)
	}
	s.host, s.dev, s.off = h, d, 0
	return nil
}

func (s *staging) free() {
	hostFree(s.host)
	if s.dev != 0 {
		cu.MemFree(s.dev)
	}
	s.host, s.dev = nil, 0
}

func (s *staging) reset() { s.off = 0 }

// ints copies v to the device and returns its device address, valid for work queued next.
func (b *Backend) ints(v ...[]int32) uint64 {
	if b.capturing {
		panic("gpu: host arrays cannot be staged during graph capture; keep such inputs on the device")
	}
	s := &b.stage
	n := 0
	for _, a := range v {
		n += 4 * len(a)
	}
	if s.off+n > len(s.host) {
		must("staging: cuStreamSynchronize", b.stream.Synchronize())
		s.off = 0
		if n > len(s.host) {
			s.free()
			must("staging: grow", s.init(max(n, 2*len(s.host))))
		}
	}
	at := s.off
	for _, a := range v {
		if len(a) > 0 {
			copy(unsafe.Slice((*int32)(unsafe.Pointer(&s.host[s.off])), len(a)), a)
			s.off += 4 * len(a)
		}
	}
	if n > 0 {
		must("staging: cuMemcpyHtoDAsync", cu.MemcpyHtoDAsync(s.dev+cu.DevicePtr(at), unsafe.Pointer(&s.host[at]), int64(n), b.stream))
	}
	s.off = (s.off + 255) &^ 255
	return uint64(s.dev) + uint64(at)
}

// floats is ints for float32 arrays (RoPE's frequencies).
func (b *Backend) floats(v []float32) uint64 {
	return b.ints(unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(v))), len(v)))
}

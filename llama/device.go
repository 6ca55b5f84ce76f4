package llama

import (
	"github.com/tillerlm/tiller/tensor"
)

// DeviceMemory is what a backend that keeps tensors in its own memory (a GPU) offers beyond
// tensor.Backend, and what recording a forward pass and the backward pass need of it there: a
// copy within its memory, and giving memory back.
type DeviceMemory interface {
	Copy(dst, src *tensor.Tensor) // same dtype and size, both in the backend's memory
	Free(t *tensor.Tensor)        // a tensor Alloc or Upload made, not a view of one
}

// OnDevice reports whether the runner's weights and activations are in a device's memory rather
// than the host's.
func (r *Runner) OnDevice() bool { return !r.Model.Embed.OnHost() }

// mem allocates and moves activations in a backend's memory: plain host code on the CPU, backend
// ops on a device (Embedding gathers rows, EmbeddingBackward scatters them into zeros, Copy
// copies), so that the backward pass is written once for both. On a device it remembers the
// temporaries it hands out, which release gives back; on the host, release hands them to the
// runner's spares for the next pass to reuse.
type mem struct {
	be    tensor.Backend
	dev   DeviceMemory // nil on the host
	dt    tensor.DType
	temps []*tensor.Tensor
	spare *spares // on the host: the runner's recycled buffers
}

func (r *Runner) mem() *mem {
	m := &mem{be: r.Backend, dt: r.dtype(), spare: &r.spare}
	if r.OnDevice() {
		m.dev, _ = r.Backend.(DeviceMemory)
	}
	return m
}

// spares are host buffers that a recorded pass and a backward pass gave back, by size in bytes,
// for the next pass to reuse. Analysis runs pass after pass over prompts of similar lengths, each
// allocating the same few hundred tensors (a record of several MB per token, a layer's gradients):
// fresh memory from the Go heap costs a page fault per 4 KiB on first touch and a clear, and
// garbage to collect; a spare buffer is warm. At most maxSpare bytes are kept.
type spares struct {
	free  map[int][]*tensor.Tensor
	bytes int
}

const maxSpare = 1 << 30

// get returns a spare tensor of the given shape, its contents left as they were, or nil.
func (s *spares) get(dt tensor.DType, shape []int) *tensor.Tensor {
	size := dt.Size()
	for _, d := range shape {
		size *= d
	}
	list := s.free[size]
	if len(list) == 0 {
		return nil
	}
	t := list[len(list)-1]
	s.free[size] = list[:len(list)-1]
	s.bytes -= size
	return &tensor.Tensor{Shape: append([]int(nil), shape...), DType: dt, Data: t.Data}
}

// put keeps host tensor t for reuse; t must not be used afterwards.
func (s *spares) put(t *tensor.Tensor) {
	if t == nil || !t.OnHost() || len(t.Data) == 0 || s.bytes+len(t.Data) > maxSpare {
		return
	}
	if s.free == nil {
		s.free = map[int][]*tensor.Tensor{}
	}
	s.free[len(t.Data)] = append(s.free[len(t.Data)], t)
	s.bytes += len(t.Data)
}

// onDevice reports whether m allocates in a device's memory.
func (m *mem) onDevice() bool { return m.dev != nil }

// alloc is a zeroed temporary of the activation dtype.
func (m *mem) alloc(shape ...int) *tensor.Tensor {
	if !m.onDevice() {
		t := m.spare.get(m.dt, shape)
		if t == nil {
			t = tensor.New(m.dt, shape...)
		} else {
			clear(t.Data)
		}
		m.temps = append(m.temps, t)
		return t
	}
	t := m.be.Alloc(m.dt, shape...)
	m.temps = append(m.temps, t)
	return t
}

// release gives every temporary back: to the device, or to the runner's spares on the host.
func (m *mem) release() {
	for _, t := range m.temps {
		m.free(t)
	}
	m.temps = m.temps[:0]
}

// free gives back a tensor the caller owns: to the device, or to the runner's spares on the host.
func (m *mem) free(t *tensor.Tensor) {
	if m.onDevice() {
		m.dev.Free(t)
	} else {
		m.spare.put(t)
	}
}

// keep takes t out of the temporaries, so that release leaves it alone.
func (m *mem) keep(t *tensor.Tensor) {
	for i, x := range m.temps {
		if x == t {
			m.temps = append(m.temps[:i], m.temps[i+1:]...)
			return
		}
	}
}

// track makes t a temporary again.
func (m *mem) track(t *tensor.Tensor) {
	m.temps = append(m.temps, t)
}

// clone is a copy of t that is not a temporary: the caller owns it (free on a device).
func (m *mem) clone(t *tensor.Tensor) *tensor.Tensor {
	if !m.onDevice() {
		c := m.spare.get(t.DType, t.Shape)
		if c == nil {
			c = tensor.New(t.DType, t.Shape...)
		}
		if t.OnHost() {
			copy(c.Data, t.Data)
		} else {
			m.be.Download(c, t)
		}
		return c
	}
	c := m.be.Alloc(t.DType, t.Shape...)
	m.dev.Copy(c, t)
	return c
}

// scratch is a tensor of t's dtype and shape beside it (in a device's memory when t is there),
// its contents undefined, that is not a temporary: the caller owns it, as clone's.
func (m *mem) scratch(t *tensor.Tensor) *tensor.Tensor {
	if m.onDevice() {
		return m.be.Alloc(t.DType, t.Shape...)
	}
	if c := m.spare.get(t.DType, t.Shape); c != nil {
		return c
	}
	return tensor.New(t.DType, t.Shape...)
}

// host is t in host memory: t itself there, a downloaded copy from a device.
func (m *mem) host(t *tensor.Tensor) *tensor.Tensor {
	if t.OnHost() {
		return t
	}
	h := tensor.New(t.DType, t.Shape...)
	m.be.Download(h, t)
	return h
}

// all reports whether rows (ascending, distinct) are every row of a tensor of n rows.
func all(rows []int32, n int) bool { return len(rows) == n }

// flat is t as (rows, width).
func flat(t *tensor.Tensor) *tensor.Tensor {
	return t.Reshape(t.Shape[0], t.Numel()/max(t.Shape[0], 1))
}

// rowsOf gathers rows of t (n, …) into a new tensor (len(rows), …); t itself when rows are all of them.
func (m *mem) rowsOf(t *tensor.Tensor, rows []int32) *tensor.Tensor {
	n := t.Shape[0]
	if all(rows, n) {
		return t
	}
	shape := append([]int{len(rows)}, t.Shape[1:]...)
	out := m.alloc(shape...)
	if !m.onDevice() {
		rb := len(t.Data) / n
		for j, i := range rows {
			copy(out.Data[j*rb:(j+1)*rb], t.Data[int(i)*rb:(int(i)+1)*rb])
		}
		return out
	}
	if len(rows) > 0 {
		m.be.Embedding(flat(out), flat(t), rows)
	}
	return out
}

// spread places the rows of t (len(rows), …) at rows of a new zeroed tensor (n, …); t itself when
// rows are all n.
func (m *mem) spread(t *tensor.Tensor, rows []int32, n int) *tensor.Tensor {
	if all(rows, n) {
		return t
	}
	out := m.alloc(append([]int{n}, t.Shape[1:]...)...)
	if !m.onDevice() {
		rb := len(out.Data) / n
		for j, i := range rows {
			copy(out.Data[int(i)*rb:(int(i)+1)*rb], t.Data[j*rb:(j+1)*rb])
		}
		return out
	}
	if len(rows) > 0 {
		m.be.(tensor.Backward).EmbeddingBackward(flat(out), flat(t), rows)
	}
	return out
}

// keepRows is t (n, …) with every row but rows zeroed: in place on the host, a new temporary on a
// device.
func (m *mem) keepRows(t *tensor.Tensor, rows []int32) *tensor.Tensor {
	n := t.Shape[0]
	if all(rows, n) {
		return t
	}
	if m.onDevice() {
		return m.spread(m.rowsOf(t, rows), rows, n)
	}
	rb := len(t.Data) / n
	next := 0
	for i := 0; i < n; i++ {
		if next < len(rows) && int(rows[next]) == i {
			next++
			continue
		}
		clear(t.Data[i*rb : (i+1)*rb])
	}
	return t
}

// copyOf is a temporary copy of t.
func (m *mem) copyOf(t *tensor.Tensor) *tensor.Tensor {
	c := m.alloc(t.Shape...)
	if m.onDevice() {
		m.dev.Copy(c, t)
	} else {
		copy(c.Data, t.Data)
	}
	return c
}

// FreeKVCache gives a cache's memory back to a device backend (on the CPU it is garbage like any
// other); a nil cache is nothing to free. The cache must not be used afterwards.
func (r *Runner) FreeKVCache(kv *tensor.KVCache) {
	d, ok := r.Backend.(DeviceMemory)
	if kv == nil || !ok || !r.OnDevice() {
		return
	}
	for l := range kv.K {
		d.Free(kv.K[l])
		d.Free(kv.V[l])
	}
	kv.K, kv.V = nil, nil
}

// ReuseKVCache is kv when it holds at least need positions, else a new cache of size positions
// (NewKVCache) with kv freed: for passes one after another that each start from an empty cache.
func (r *Runner) ReuseKVCache(kv *tensor.KVCache, need, size, blockSize int) *tensor.KVCache {
	if kv != nil && kv.Blocks()*kv.BlockSize >= need {
		return kv
	}
	r.FreeKVCache(kv)
	return r.NewKVCache(size, blockSize)
}

package hooks

import (
	"fmt"
	"sort"

	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

// Cache holds activations (or gradients) by sequence and hook point name, each in the point's
// per-sequence shape: (pos, …) with row p holding position p, and (head, pos_q, pos_k) for the
// pattern. A run that captures positions in several calls (a prompt, then decode steps) grows the
// tensors as positions arrive.
type Cache struct {
	data  map[cacheKey]*tensor.Tensor
	order []cacheKey                  // insertion order, which is forward order for one run
	spare map[cacheKey]*tensor.Tensor // memory Recycle kept, by point and sequence
}

type cacheKey struct {
	seq  int32
	name string
}

// NewCache makes an empty cache.
func NewCache() *Cache { return &Cache{data: map[cacheKey]*tensor.Tensor{}} }

// Recycle empties the cache but keeps its tensors' memory for those the next run stores at the
// same points and sequences: a read set used again then needs no fresh memory (tens of MB per
// pass of a prompt, whose page faults and zeroing cost more than the copies). Tensors taken from
// the cache before must not be used afterwards.
func (c *Cache) Recycle() {
	if c.spare == nil {
		c.spare = map[cacheKey]*tensor.Tensor{}
	}
	for k, t := range c.data {
		c.spare[k] = t
	}
	clear(c.data)
	c.order = c.order[:0]
}

// Get returns sequence seq's tensor at the named point.
func (c *Cache) Get(seq int32, name string) (*tensor.Tensor, bool) {
	t, ok := c.data[cacheKey{seq, name}]
	return t, ok
}

// Set stores t as sequence seq's tensor at the named point, replacing any.
func (c *Cache) Set(seq int32, name string, t *tensor.Tensor) {
	k := cacheKey{seq, name}
	if _, ok := c.data[k]; !ok {
		c.order = append(c.order, k)
	}
	c.data[k] = t
}

// Names lists the points held for sequence seq, in the order they were first stored.
func (c *Cache) Names(seq int32) []string {
	var out []string
	for _, k := range c.order {
		if k.seq == seq {
			out = append(out, k.name)
		}
	}
	return out
}

// Seqs lists the sequences the cache holds, ascending.
func (c *Cache) Seqs() []int32 {
	seen := map[int32]bool{}
	var out []int32
	for _, k := range c.order {
		if !seen[k.seq] {
			seen[k.seq] = true
			out = append(out, k.seq)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Save writes sequence seq's tensors to a safetensors file, hook names as tensor names, with the
// given metadata.
func (c *Cache) Save(path string, seq int32, meta map[string]string) error {
	names := c.Names(seq)
	if len(names) == 0 {
		return fmt.Errorf("%s: the cache holds nothing for sequence %d", path, seq)
	}
	ts := make([]*tensor.Tensor, len(names))
	for i, n := range names {
		ts[i] = c.data[cacheKey{seq, n}]
	}
	return safetensors.Save(path, names, ts, meta)
}

// LoadCache reads a safetensors file written by Save (or any file of tensors named by hook point)
// as the tensors of sequence 0, with the file's metadata.
func LoadCache(path string) (*Cache, map[string]string, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	c := NewCache()
	for _, name := range f.Names() {
		t, err := f.Tensor(name)
		if err != nil {
			return nil, nil, err
		}
		own := tensor.New(t.DType, t.Shape...) // the file is unmapped on return
		copy(own.Data, t.Data)
		c.Set(0, name, own)
	}
	return c, f.Header.Metadata, nil
}

// Put stores a batch's activation (or gradient) at p into each sequence's tensor: x is (n, width)
// with row i the token at position pos[i] of sequence seq[i], or (n, heads, ctx) for the pattern.
func (c *Cache) Put(p Point, d Dims, x *tensor.Tensor, seq, pos []int32) {
	// Grow each sequence's tensor once, to its largest position in the batch.
	need := map[int32]int{}
	for i, s := range seq {
		need[s] = max(need[s], int(pos[i])+1)
		if p.Kind == Pattern {
			need[s] = max(need[s], x.Shape[2])
		}
	}
	dst := map[int32]*tensor.Tensor{}
	for s, n := range need {
		dst[s] = c.grow(s, p, d, n, x.DType)
	}
	width := x.Numel() / len(seq)
	if p.Kind != Pattern {
		// Each sequence's tensor has x's dtype (grow makes it so): copy rows as they are.
		rb := width * x.DType.Size()
		for i := range seq {
			t, at := dst[seq[i]], int(pos[i])*rb
			copy(t.Data[at:at+rb], x.Data[i*rb:(i+1)*rb])
		}
		return
	}
	xs := x.ToF64()
	heads, ctx := x.Shape[1], x.Shape[2]
	for i := range seq {
		t, row := dst[seq[i]], xs[i*width:(i+1)*width]
		dp := t.Shape[1]
		for h := 0; h < heads; h++ {
			for k := 0; k < ctx; k++ {
				setF64(t, (h*dp+int(pos[i]))*dp+k, row[h*ctx+k])
			}
		}
	}
}

// grow returns sequence seq's tensor at point p with room for positions [0, n) (and n keys for the
// pattern), keeping what it held.
func (c *Cache) grow(seq int32, p Point, d Dims, n int, dt tensor.DType) *tensor.Tensor {
	name := p.Name()
	old, ok := c.Get(seq, name)
	have := 0
	if ok {
		have = old.Shape[0]
		if p.Kind == Pattern {
			have = old.Shape[1]
		}
		if have >= n && old.DType == dt {
			return old
		}
	}
	n = max(n, have)
	t := c.reuse(cacheKey{seq, name}, dt, d.Shape(p, n))
	if ok {
		copyInto(t, old, p.Kind == Pattern)
	}
	c.Set(seq, name, t)
	return t
}

// reuse is a zeroed tensor of the given shape: the memory Recycle kept for key when it is large
// enough, else new.
func (c *Cache) reuse(key cacheKey, dt tensor.DType, shape []int) *tensor.Tensor {
	size := dt.Size()
	for _, d := range shape {
		size *= d
	}
	sp, ok := c.spare[key]
	if !ok || cap(sp.Data) < size {
		return tensor.New(dt, shape...)
	}
	delete(c.spare, key)
	t := &tensor.Tensor{Shape: shape, DType: dt, Data: sp.Data[:size]}
	clear(t.Data)
	return t
}

// copyInto copies the smaller tensor src into the leading corner of dst (same dtype or converted).
func copyInto(dst, src *tensor.Tensor, pattern bool) {
	s := src.ToF64()
	rows, width := src.Shape[0], src.Numel()/max(src.Shape[0], 1)
	dw := dst.Numel() / max(dst.Shape[0], 1)
	if pattern { // (head, P, P): copy each head's square
		heads, p, dp := src.Shape[0], src.Shape[1], dst.Shape[1]
		for h := 0; h < heads; h++ {
			for q := 0; q < p; q++ {
				for k := 0; k < p; k++ {
					setF64(dst, (h*dp+q)*dp+k, s[(h*p+q)*p+k])
				}
			}
		}
		return
	}
	for r := 0; r < rows; r++ {
		for i := 0; i < width; i++ {
			setF64(dst, r*dw+i, s[r*width+i])
		}
	}
}

func setF64(t *tensor.Tensor, i int, v float64) {
	if t.DType == tensor.F64 {
		t.F64()[i] = v
	} else {
		t.F32()[i] = float32(v)
	}
}

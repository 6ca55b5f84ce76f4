package hooks

import (
	"fmt"

	"github.com/tillerlm/tiller/tensor"
)

// Device is what a Set needs to run its interventions on activations kept in a backend's memory
// (a GPU's): reads download, captures copy within the device, replacements patch rows there,
// additions add an uploaded delta. Package gpu's Backend is one.
type Device interface {
	tensor.Backend
	Copy(dst, src *tensor.Tensor) // same dtype and size, both in the device's memory
	Free(t *tensor.Tensor)
	// PatchRows writes x[dst[j], lo:hi] = value[src[j], lo:hi]; x (n, width), value (m, width),
	// both F32 in the device's memory.
	PatchRows(x, value *tensor.Tensor, dst, src []int32, lo, hi int)
}

// Batch is a whole batch's activation at a point as a forward pass saw it: X (n, …), row i the
// token at position Pos[i] of sequence Seq[i] (the pattern: (n, heads, ctx)), in the memory of the
// backend that ran the pass.
type Batch struct {
	X        *tensor.Tensor
	Seq, Pos []int32
}

// Capture registers reads that keep the whole batch's activation at every point the patterns
// match where the forward pass computed it — in a device's memory on a device — in s.Captured,
// one Batch per pass through the set, rather than splitting it by sequence into the host Cache
// (Read): for consumers on the same device, such as attribution scores reduced there.
func (s *Set) Capture(patterns string) error {
	ps, err := Match(patterns, s.Dims.Layers)
	if err != nil {
		return err
	}
	for _, p := range ps {
		s.add(p, entry{act: capture})
	}
	return nil
}

// CapturePoints captures the given points, as Capture does the points its patterns name, without
// matching names.
func (s *Set) CapturePoints(ps []Point) {
	for _, p := range ps {
		s.add(p, entry{act: capture})
	}
}

// AtDevice runs the interventions registered at p, in order, on a batch's activation x in d's
// memory, as At does on the host: (n, width) with row i the token at position pos[i] of sequence
// seq[i], or (n, heads, ctx) for the pattern. Patch values given in host memory are uploaded once.
func (s *Set) AtDevice(p Point, x *tensor.Tensor, seq, pos []int32, d Device) error {
	if s == nil {
		return nil
	}
	for i := range s.points[p.Index(s.Dims.Layers)] {
		e := &s.points[p.Index(s.Dims.Layers)][i]
		switch e.act {
		case read:
			h := tensor.New(x.DType, x.Shape...)
			d.Download(h, x)
			s.read(p, h, seq, pos)
		case capture:
			c := d.Alloc(x.DType, x.Shape...)
			d.Copy(c, x)
			s.keep(p, c, seq, pos)
		case replace:
			if err := s.patchDevice(p, e, x, seq, pos, d); err != nil {
				return err
			}
		case add:
			delta := tensor.New(tensor.F32, x.Shape...)
			s.steer(p, e, delta, seq, pos)
			up := d.Upload(delta)
			d.Add(x, x, up)
			d.Free(up)
		}
	}
	return nil
}

func (s *Set) keep(p Point, x *tensor.Tensor, seq, pos []int32) {
	if s.Captured == nil {
		s.Captured = map[Point][]Batch{}
	}
	s.Captured[p] = append(s.Captured[p], Batch{X: x, Seq: append([]int32(nil), seq...), Pos: append([]int32(nil), pos...)})
}

// patchDevice is patch on a device: the selected rows of the value (uploaded once, as F32) copied
// over x's at the columns of the selected heads. The pattern, which only AtP*'s analyses patch,
// goes through the host.
func (s *Set) patchDevice(p Point, e *entry, x *tensor.Tensor, seq, pos []int32, d Device) error {
	if p.Kind == Pattern {
		h := tensor.New(x.DType, x.Shape...)
		d.Download(h, x)
		if err := s.patch(p, e, h, seq, pos); err != nil {
			return err
		}
		up := d.Upload(h)
		d.Copy(x, up)
		d.Free(up)
		return nil
	}
	if e.dev == nil {
		e.dev = e.value
		if e.value.OnHost() {
			e.dev = d.Upload(e.value.Convert(tensor.F32))
			e.uploaded = true
		}
	}
	var dst, src []int32
	for i := range seq {
		if !e.where.has(seq[i], pos[i]) {
			continue
		}
		if int(pos[i]) >= e.value.Shape[0] {
			return fmt.Errorf("%s: patch covers %d positions, the run reached position %d", p.Name(), e.value.Shape[0], pos[i])
		}
		dst, src = append(dst, int32(i)), append(src, pos[i])
	}
	if len(dst) == 0 {
		return nil
	}
	width := x.Numel() / len(seq)
	value := e.dev.Reshape(e.value.Shape[0], width)
	if e.where.Heads == nil {
		d.PatchRows(x.Reshape(len(seq), width), value, dst, src, 0, width)
		return nil
	}
	hw := s.Dims.DHead
	for _, h := range e.where.Heads {
		d.PatchRows(x.Reshape(len(seq), width), value, dst, src, h*hw, (h+1)*hw)
	}
	return nil
}

// Release gives back to d the device memory the set holds: its captures and the patch values it
// uploaded. The captures must not be used afterwards.
func (s *Set) Release(d Device) {
	if s == nil {
		return
	}
	for p, bs := range s.Captured {
		for _, b := range bs {
			if !b.X.OnHost() {
				d.Free(b.X)
			}
		}
		delete(s.Captured, p)
	}
	for _, es := range s.points {
		for i := range es {
			if e := &es[i]; e.uploaded {
				d.Free(e.dev)
				e.dev, e.uploaded = nil, false
			}
		}
	}
}

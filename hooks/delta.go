package hooks

import "github.com/tillerlm/tiller/tensor"

// Additive reports whether something is registered at p and every intervention there is an
// addition (Add). Additions commute with nothing but each other, so a backend that keeps
// activations in its own memory can apply them as one delta (Delta) without the activations ever
// visiting the host; reads and replacements need them on the host.
func (s *Set) Additive(p Point) bool {
	if !s.Active(p) {
		return false
	}
	for _, e := range s.points[p.Index(s.Dims.Layers)] {
		if e.act != add {
			return false
		}
	}
	return true
}

// Delta returns, for the batch rows of sequences seq at positions pos, the sum of the additions
// registered at p: a host F32 tensor (len(seq), width), in dst when it has that shape (dst may be
// nil), zero where no addition selects the row. Adding it to the activation does what At does
// when Additive(p).
func (s *Set) Delta(dst *tensor.Tensor, p Point, seq, pos []int32) *tensor.Tensor {
	width := s.Dims.Width(p)
	if dst == nil || dst.DType != tensor.F32 || !dst.OnHost() || len(dst.Shape) != 2 || dst.Shape[0] != len(seq) || dst.Shape[1] != width {
		dst = tensor.New(tensor.F32, len(seq), width)
	} else {
		clear(dst.F32())
	}
	for i := range s.points[p.Index(s.Dims.Layers)] {
		if e := &s.points[p.Index(s.Dims.Layers)][i]; e.act == add {
			s.steer(p, e, dst, seq, pos)
		}
	}
	return dst
}

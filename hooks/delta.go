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

// Term is one addition at a point over the rows of a batch: row i gets Alpha[i]·Vector.
type Term struct {
	Vector []float32 // the Steer's own slice, not a copy: a backend may key a device copy by it
	Alpha  []float32 // (rows) the strength at each row; 0 where the addition does not select it
}

// Terms returns the additions registered at p, in registration order, as terms over the batch
// rows of sequences seq at positions pos, reusing dst's slices. Adding Σ_t Alpha_t[i]·Vector_t to
// row i does what At does when Additive(p) (up to the order of the f32 sums): a backend that keeps
// activations in its own memory uploads only the strengths of a step, and builds the rows there.
func (s *Set) Terms(dst []Term, p Point, seq, pos []int32) []Term {
	dst = dst[:0]
	if !s.Active(p) {
		return dst
	}
	for i := range s.points[p.Index(s.Dims.Layers)] {
		e := &s.points[p.Index(s.Dims.Layers)][i]
		if e.act != add {
			continue
		}
		k := len(dst)
		if k < cap(dst) {
			dst = dst[:k+1]
		} else {
			dst = append(dst, Term{})
		}
		t := &dst[k]
		t.Vector = e.steer.Vector
		if cap(t.Alpha) < len(seq) {
			t.Alpha = make([]float32, len(seq))
		}
		t.Alpha = t.Alpha[:len(seq)]
		for r := range seq {
			t.Alpha[r] = 0
			if e.where.has(seq[r], pos[r]) {
				t.Alpha[r] = e.steer.alpha(seq[r])
			}
		}
	}
	return dst
}

// ActivePoints appends to dst the points where something is registered, in forward order.
func (s *Set) ActivePoints(dst []Point) []Point {
	if s == nil {
		return dst
	}
	last := len(s.points) - 1
	for i, es := range s.points {
		if len(es) == 0 {
			continue
		}
		switch i {
		case 0:
			dst = append(dst, Point{-1, Embed})
		case last:
			dst = append(dst, Point{-1, FinalNorm})
		default:
			dst = append(dst, Point{(i - 1) / len(layerKinds), ResidPre + Kind((i-1)%len(layerKinds))})
		}
	}
	return dst
}

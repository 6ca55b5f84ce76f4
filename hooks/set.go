package hooks

import (
	"fmt"
	"slices"

	"github.com/tillerlm/tiller/tensor"
)

// Where selects the rows an intervention touches; a nil field selects everything.
type Where struct {
	Seqs      []int32 // sequence ids of the batch
	Positions []int32 // positions within each sequence
	Heads     []int   // heads of a per-head point (q, k, v, pattern, z)
}

func (w Where) has(seq, pos int32) bool {
	return (w.Seqs == nil || slices.Contains(w.Seqs, seq)) && (w.Positions == nil || slices.Contains(w.Positions, pos))
}

// Steer is an addition h += alpha·v at a point: Vector has one value per element of a position's
// row (d_model at the residual stream). SeqAlpha gives sequences their own strength; the others
// get Alpha.
type Steer struct {
	Vector   []float32
	Alpha    float32
	SeqAlpha map[int32]float32
	Where    Where
}

func (s *Steer) alpha(seq int32) float32 {
	if a, ok := s.SeqAlpha[seq]; ok {
		return a
	}
	return s.Alpha
}

type action uint8

const (
	read action = iota
	capture
	replace
	add
)

type entry struct {
	act      action
	where    Where
	value    *tensor.Tensor // replace: one sequence's activation in the point's per-sequence shape
	dev      *tensor.Tensor // replace on a device: the value in the device's memory
	uploaded bool           // dev is the set's own upload of value
	steer    *Steer         // add
}

// Set is the interventions of one run, by hook point, applied in the order they were registered.
// Reads go to Cache, captures to Captured. A run with no Set (nil) pays nothing for hooks.
type Set struct {
	Dims     Dims
	Cache    *Cache
	Captured map[Point][]Batch // by point, one Batch per forward pass (Capture)
	points   [][]entry         // by Point.Index
}

// NewSet makes an empty set for a model of the given sizes.
func NewSet(d Dims) *Set {
	return &Set{Dims: d, Cache: NewCache(), points: make([][]entry, Count(d.Layers))}
}

// Active reports whether anything is registered at p.
func (s *Set) Active(p Point) bool {
	return s != nil && len(s.points[p.Index(s.Dims.Layers)]) > 0
}

func (s *Set) add(p Point, e entry) {
	i := p.Index(s.Dims.Layers)
	s.points[i] = append(s.points[i], e)
}

// Read captures the activations at every point the patterns match into s.Cache.
func (s *Set) Read(patterns string) error {
	ps, err := Match(patterns, s.Dims.Layers)
	if err != nil {
		return err
	}
	for _, p := range ps {
		s.add(p, entry{act: read})
	}
	return nil
}

// ReadPoints reads the given points, as Read does the points its patterns name, without matching
// names: for a caller that has the points already (attribution reads hundreds of them per run).
func (s *Set) ReadPoints(ps []Point) {
	for _, p := range ps {
		s.add(p, entry{act: read})
	}
}

// Replace patches the named point with value, one sequence's activation in the point's
// per-sequence shape (positions along its first axis, or (head, pos_q, pos_k) for the pattern),
// at the rows w selects; for a per-head point w.Heads may restrict it to some heads. The value may
// be in a device's memory (F32) for runs on that device.
func (s *Set) Replace(name string, value *tensor.Tensor, w Where) error {
	p, err := Parse(name, s.Dims.Layers)
	if err != nil {
		return err
	}
	if err := s.checkPatch(p, value, w); err != nil {
		return err
	}
	s.add(p, entry{act: replace, value: value, where: w})
	return nil
}

// ReplaceFrom patches every point the patterns match with the activation that cache c holds for
// sequence src at that point (activation patching from another run).
func (s *Set) ReplaceFrom(patterns string, c *Cache, src int32, w Where) error {
	ps, err := Match(patterns, s.Dims.Layers)
	if err != nil {
		return err
	}
	for _, p := range ps {
		v, ok := c.Get(src, p.Name())
		if !ok {
			return fmt.Errorf("patch source holds no %s for sequence %d", p.Name(), src)
		}
		if err := s.checkPatch(p, v, w); err != nil {
			return err
		}
		s.add(p, entry{act: replace, value: v, where: w})
	}
	return nil
}

// Add registers h += alpha·v at every point the patterns match.
func (s *Set) Add(patterns string, st Steer) error {
	ps, err := Match(patterns, s.Dims.Layers)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.Kind == Pattern {
			return fmt.Errorf("%s: adding to attention probabilities is not supported", p.Name())
		}
		if w := s.Dims.Width(p); len(st.Vector) != w {
			return fmt.Errorf("%s: vector has %d values, the point has %d per position", p.Name(), len(st.Vector), w)
		}
		st := st
		s.add(p, entry{act: add, steer: &st, where: st.Where})
	}
	return nil
}

func (s *Set) checkPatch(p Point, v *tensor.Tensor, w Where) error {
	if v.DType != tensor.F32 && v.DType != tensor.F64 {
		return fmt.Errorf("%s: patch is %s, want F32 or F64", p.Name(), v.DType)
	}
	want := s.Dims.Shape(p, 1)
	if len(v.Shape) != len(want) || len(v.Shape) == 0 {
		return fmt.Errorf("%s: patch has shape %v, want %v", p.Name(), v.Shape, s.Dims.Shape(p, max(v.Rows(), 1)))
	}
	if p.Kind == Pattern {
		if v.Shape[0] != want[0] || v.Shape[1] != v.Shape[2] {
			return fmt.Errorf("%s: patch has shape %v, want (heads %d, pos, pos)", p.Name(), v.Shape, want[0])
		}
	} else if fmt.Sprint(v.Shape[1:]) != fmt.Sprint(want[1:]) {
		return fmt.Errorf("%s: patch has shape %v, want (pos, %v)", p.Name(), v.Shape, want[1:])
	}
	for _, h := range w.Heads {
		if !p.PerHead() {
			return fmt.Errorf("%s has no heads to select", p.Name())
		}
		heads := s.Dims.Heads
		if p.Kind == K || p.Kind == V {
			heads = s.Dims.KVHeads
		}
		if h < 0 || h >= heads {
			return fmt.Errorf("%s: head %d out of range 0 to %d", p.Name(), h, heads-1)
		}
	}
	return nil
}

// At runs the interventions registered at p on a batch's activation x: (n, width) with row i
// belonging to token i of sequence seq[i] at position pos[i]; for the pattern (n, heads, ctx).
// F32 or F64. The model calls it at each point when a Set is given.
func (s *Set) At(p Point, x *tensor.Tensor, seq, pos []int32) error {
	if s == nil {
		return nil
	}
	for i := range s.points[p.Index(s.Dims.Layers)] {
		e := &s.points[p.Index(s.Dims.Layers)][i]
		var err error
		switch e.act {
		case read:
			s.read(p, x, seq, pos)
		case capture:
			c := tensor.New(x.DType, x.Shape...)
			copy(c.Data, x.Data)
			s.keep(p, c, seq, pos)
		case replace:
			if !e.value.OnHost() {
				return fmt.Errorf("%s: the patch value is in a device's memory, the run's activations on the host", p.Name())
			}
			err = s.patch(p, e, x, seq, pos)
		case add:
			s.steer(p, e, x, seq, pos)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Set) read(p Point, x *tensor.Tensor, seq, pos []int32) {
	s.Cache.Put(p, s.Dims, x, seq, pos)
}

// patch overwrites the selected rows (and heads) of x with the value's rows at the same positions.
func (s *Set) patch(p Point, e *entry, x *tensor.Tensor, seq, pos []int32) error {
	val := e.value.ToF64()
	n := len(seq)
	width := x.Numel() / n
	headWidth := width
	if p.PerHead() {
		headWidth = s.headWidth(p, x)
	}
	for i := range seq {
		if !e.where.has(seq[i], pos[i]) {
			continue
		}
		if p.Kind == Pattern {
			heads, ctx, vp := x.Shape[1], x.Shape[2], e.value.Shape[1]
			if int(pos[i]) >= vp {
				return fmt.Errorf("%s: patch covers %d positions, the run reached position %d", p.Name(), vp, pos[i])
			}
			for h := 0; h < heads; h++ {
				if e.where.Heads != nil && !slices.Contains(e.where.Heads, h) {
					continue
				}
				for k := 0; k < ctx; k++ {
					v := 0.0
					if k < vp {
						v = val[(h*vp+int(pos[i]))*vp+k]
					}
					setF64(x, (i*heads+h)*ctx+k, v)
				}
			}
			continue
		}
		if int(pos[i]) >= e.value.Shape[0] {
			return fmt.Errorf("%s: patch covers %d positions, the run reached position %d", p.Name(), e.value.Shape[0], pos[i])
		}
		src := val[int(pos[i])*width : (int(pos[i])+1)*width]
		for k, v := range src {
			if e.where.Heads != nil && !slices.Contains(e.where.Heads, k/headWidth) {
				continue
			}
			setF64(x, i*width+k, v)
		}
	}
	return nil
}

func (s *Set) headWidth(p Point, x *tensor.Tensor) int {
	if p.Kind == Pattern {
		return x.Shape[2]
	}
	return s.Dims.DHead
}

func (s *Set) steer(p Point, e *entry, x *tensor.Tensor, seq, pos []int32) {
	width := x.Numel() / len(seq)
	for i := range seq {
		if !e.where.has(seq[i], pos[i]) {
			continue
		}
		a := e.steer.alpha(seq[i])
		if a == 0 {
			continue
		}
		switch x.DType {
		case tensor.F64:
			row := x.F64()[i*width : (i+1)*width]
			for k, v := range e.steer.Vector {
				row[k] += float64(a) * float64(v)
			}
		default:
			row := x.F32()[i*width : (i+1)*width]
			for k, v := range e.steer.Vector {
				row[k] += a * v
			}
		}
	}
}

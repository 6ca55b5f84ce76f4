package hooks

import "fmt"

// AddAt registers h += alpha·v at the one point p, as Add does for a pattern naming only p, but
// without matching a pattern against every point of the model: for callers that build a hook set
// at every step, such as a batching engine whose rows come and go.
func (s *Set) AddAt(p Point, st Steer) error {
	if i := p.Index(s.Dims.Layers); i < 0 || i >= len(s.points) || p.Layer >= s.Dims.Layers {
		return fmt.Errorf("hook point %s is outside a %d-layer model", p.Name(), s.Dims.Layers)
	}
	if p.Kind == Pattern {
		return fmt.Errorf("%s: adding to attention probabilities is not supported", p.Name())
	}
	if w := s.Dims.Width(p); len(st.Vector) != w {
		return fmt.Errorf("%s: vector has %d values, the point has %d per position", p.Name(), len(st.Vector), w)
	}
	s.add(p, entry{act: add, steer: &st, where: st.Where})
	return nil
}

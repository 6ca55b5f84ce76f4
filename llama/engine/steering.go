package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/tillerlm/tiller/hooks"
)

// Span is the set of a sequence's positions an addition steers, as in steer.ApplyPositions.
type Span uint8

const (
	All       Span = iota // every position: the prompt and every generated token
	Prompt                // the prompt's tokens only; generated tokens see it through the KV cache
	Generated             // the positions whose output chooses a generated token: the prompt's last token and each generated one
)

// Spans are the names ParseSpan reads, in Span order.
var Spans = []string{"all", "prompt", "generated"}

func (s Span) String() string { return Spans[s] }

// ParseSpan reads a span by name.
func ParseSpan(name string) (Span, error) {
	for i, n := range Spans {
		if n == name {
			return Span(i), nil
		}
	}
	return 0, fmt.Errorf("positions %q: want all, prompt or generated", name)
}

// Addition is one steering term of a request: h += Alpha·Vector at hook point Point (a single
// point such as "blocks.12.hook_resid_post"), on the positions of Span.
type Addition struct {
	Point  string
	Vector []float32 // one value per element of the point's row (d_model at the residual stream)
	Alpha  float32
	Span   Span
	// FromEnd, with Span Prompt, narrows it to these prompt positions, counted from the prompt's
	// end (0 = its last token; an offset past its start names none): a locus, STAR's localized
	// injection. nil: every prompt position.
	FromEnd []int
}

// maxFromEnd bounds the positions one addition may name.
const maxFromEnd = 256

// check validates an addition against the model's hook points and returns its point.
func (a Addition) check(d hooks.Dims) (hooks.Point, error) {
	p, err := hooks.Parse(a.Point, d.Layers)
	if err != nil {
		return p, err
	}
	if p.Kind == hooks.Pattern {
		return p, fmt.Errorf("%s: adding to attention probabilities is not supported", a.Point)
	}
	if w := d.Width(p); len(a.Vector) != w {
		return p, fmt.Errorf("%s: vector has %d values, the point has %d per position", a.Point, len(a.Vector), w)
	}
	if math.IsNaN(float64(a.Alpha)) || math.IsInf(float64(a.Alpha), 0) {
		return p, fmt.Errorf("%s: strength %g is not a finite number", a.Point, a.Alpha)
	}
	for i, v := range a.Vector {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return p, fmt.Errorf("%s: vector value %d is %g, not a finite number", a.Point, i, v)
		}
		// The addition is formed in float32: alpha·v must be a float32 too.
		if math.Abs(float64(a.Alpha)*float64(v)) > math.MaxFloat32 {
			return p, fmt.Errorf("%s: strength %g × vector value %d (%g) overflows float32", a.Point, a.Alpha, i, v)
		}
	}
	if a.Span > Generated {
		return p, fmt.Errorf("%s: span %d out of range", a.Point, a.Span)
	}
	if a.FromEnd != nil {
		if a.Span != Prompt || len(a.FromEnd) == 0 || len(a.FromEnd) > maxFromEnd {
			return p, fmt.Errorf("%s: positions from the end need span prompt and 1 to %d of them", a.Point, maxFromEnd)
		}
		for _, k := range a.FromEnd {
			if k < 0 {
				return p, fmt.Errorf("%s: position %d from the end, want >= 0", a.Point, k)
			}
		}
	}
	return p, nil
}

// prefixKey fingerprints what shapes the keys and values of a prompt's positions before its last:
// the additions that steer prompt positions. A Generated addition touches only the last prompt
// token, which the prefix cache never holds, so decode-only steering leaves the key unchanged and
// shares cached prompts with unsteered requests. Positions counted from the end name other
// positions in prompts of other lengths, so such an addition keys on the prompt's length too.
func prefixKey(adds []Addition, promptLen int) [sha256.Size]byte {
	h := sha256.New()
	var buf [4]byte
	for _, a := range adds {
		if a.Span == Generated || a.Alpha == 0 {
			continue
		}
		h.Write([]byte(a.Point))
		h.Write([]byte{0})
		binary.LittleEndian.PutUint32(buf[:], math.Float32bits(a.Alpha))
		h.Write(buf[:])
		if a.FromEnd != nil {
			for _, k := range append([]int{promptLen, len(a.FromEnd)}, a.FromEnd...) {
				binary.LittleEndian.PutUint32(buf[:], uint32(k))
				h.Write(buf[:])
			}
		}
		binary.LittleEndian.PutUint32(buf[:], uint32(len(a.Vector)))
		h.Write(buf[:])
		for _, v := range a.Vector {
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			h.Write(buf[:])
		}
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// steersDecode reports whether any addition applies to decode rows.
func steersDecode(adds []Addition) bool {
	for _, a := range adds {
		if a.Alpha != 0 && a.Span != Prompt {
			return true
		}
	}
	return false
}

// steerRows registers a sequence's additions, at their parsed points, for the rows it has in one
// step: a prefill chunk of prompt positions [lo, hi), or one decode row (decode set). set is
// created on first use, so a step with no steered row runs the fast path.
func steerRows(set **hooks.Set, d hooks.Dims, seq int32, adds []Addition, points []hooks.Point, lo, hi, promptLen int, decode bool) error {
	for i, a := range adds {
		if a.Alpha == 0 {
			continue
		}
		var where []int32 // nil: every row of the sequence in this step
		switch {
		case decode && a.Span == Prompt:
			continue
		case !decode && a.Span == Generated:
			if last := promptLen - 1; last >= lo && last < hi {
				where = []int32{int32(last)}
			} else {
				continue
			}
		case !decode && a.FromEnd != nil:
			for _, k := range a.FromEnd {
				if p := promptLen - 1 - k; p >= lo && p < hi {
					where = append(where, int32(p))
				}
			}
			if where == nil {
				continue
			}
		}
		if *set == nil {
			*set = hooks.NewSet(d)
		}
		st := hooks.Steer{Vector: a.Vector, Alpha: a.Alpha, Where: hooks.Where{Seqs: []int32{seq}, Positions: where}}
		if err := (*set).AddAt(points[i], st); err != nil {
			return err
		}
	}
	return nil
}

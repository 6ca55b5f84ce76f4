package gpu

import (
	"fmt"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
)

// The plan of a decode step that does not need the device: the row count a batch runs as, where
// each of its inputs sits in the one block the host copies to the device per step, which cache
// table entries changed, and the key of the graph a step's shape replays. (Plain Go, tested with
// or without a GPU; steps.go runs it.)

// rowBucket is the rows a step of n rows runs as: the next power of two, at most maxRows. Rows
// past n are idle (position −1). Few buckets mean few graphs to record as a batch grows and shrinks.
func rowBucket(n, maxRows int) int {
	r := 1
	for r < n {
		r *= 2
	}
	return min(r, maxRows)
}

// stepLayout places a step's inputs in one block of 32-bit words: the token, position and cache
// row of each of rows rows (−1 for idle rows), then for each steered point its strengths
// (terms × rows F32) and, at an even word, the device addresses of its vectors (terms × u64).
type stepLayout struct {
	rows          int
	tok, pos, row int // word offsets
	points        []pointLayout
	words         int
}

// pointLayout is where one steered point's operands sit in a stepLayout.
type pointLayout struct {
	point       hooks.Point
	terms       int
	alpha, vecs int // word offsets
}

func newStepLayout(rows int, steer []llama.PointTerms) stepLayout {
	l := stepLayout{rows: rows, tok: 0, pos: rows, row: 2 * rows}
	w := 3 * rows
	for _, pt := range steer {
		pl := pointLayout{point: pt.Point, terms: len(pt.Terms), alpha: w}
		w += pl.terms * rows
		w += w % 2
		pl.vecs = w
		w += 2 * pl.terms
		l.points = append(l.points, pl)
	}
	l.words = w
	return l
}

// at returns the layout of point p, or nil when the step does not steer it.
func (l *stepLayout) at(p hooks.Point) *pointLayout {
	for i := range l.points {
		if l.points[i].point == p {
			return &l.points[i]
		}
	}
	return nil
}

// shape names what a graph of this layout records beyond the buffers: the rows, and the steered
// points with their number of terms.
func (l *stepLayout) shape() string {
	k := fmt.Appendf(nil, "rows %d", l.rows)
	for _, p := range l.points {
		k = fmt.Appendf(k, "; %s×%d", p.point.Name(), p.terms)
	}
	return string(k)
}

// tableChange returns the first entry at which a table row that holds have must change to hold
// want: len(want) when want is have or a prefix of it (nothing to copy).
func tableChange(have, want []int32) int {
	for i, b := range want {
		if i >= len(have) || have[i] != b {
			return i
		}
	}
	return len(want)
}

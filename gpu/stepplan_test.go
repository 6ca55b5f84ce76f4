package gpu

import (
	"testing"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
)

func TestRowBucket(t *testing.T) {
	for _, c := range []struct{ n, max, want int }{{1, 128, 1}, {2, 128, 2}, {3, 128, 4}, {9, 128, 16}, {64, 128, 64}, {65, 128, 128}, {100, 96, 96}, {5, 4, 4}} {
		if got := rowBucket(c.n, c.max); got != c.want {
			t.Errorf("rowBucket(%d, %d) = %d, want %d", c.n, c.max, got, c.want)
		}
	}
}

// The layout puts tokens, positions and rows first, then each steered point's strengths and its
// vector addresses at an even word, without overlaps, in the order of the points.
func TestStepLayout(t *testing.T) {
	post := hooks.Point{Layer: 3, Kind: hooks.ResidPost}
	attn := hooks.Point{Layer: 1, Kind: hooks.AttnOut}
	steer := []llama.PointTerms{
		{Point: attn, Terms: make([]hooks.Term, 1)},
		{Point: post, Terms: make([]hooks.Term, 2)},
	}
	l := newStepLayout(3, steer)
	if l.tok != 0 || l.pos != 3 || l.row != 6 {
		t.Fatalf("tok %d, pos %d, row %d", l.tok, l.pos, l.row)
	}
	used := make([]int, l.words)
	mark := func(what string, at, n int) {
		for i := at; i < at+n; i++ {
			if i >= l.words {
				t.Fatalf("%s runs past the layout's %d words", what, l.words)
			}
			used[i]++
		}
	}
	mark("tokens, positions, rows", 0, 9)
	for _, p := range l.points {
		if p.vecs%2 != 0 {
			t.Errorf("%s: vector addresses at odd word %d", p.point.Name(), p.vecs)
		}
		mark(p.point.Name()+" strengths", p.alpha, p.terms*3)
		mark(p.point.Name()+" vectors", p.vecs, 2*p.terms)
	}
	for i, u := range used {
		if u > 1 {
			t.Fatalf("word %d used %d times", i, u)
		}
	}
	if p := l.at(post); p == nil || p.terms != 2 {
		t.Errorf("at(%s) = %v", post.Name(), p)
	}
	if p := l.at(hooks.Point{Layer: 0, Kind: hooks.ResidPre}); p != nil {
		t.Errorf("an unsteered point has a layout: %v", p)
	}
	if got, want := l.shape(), "rows 3; blocks.1.hook_attn_out×1; blocks.3.hook_resid_post×2"; got != want {
		t.Errorf("shape %q, want %q", got, want)
	}
	if empty := newStepLayout(3, nil); empty.shape() == l.shape() {
		t.Error("a steered and an unsteered step share a graph key")
	}
}

func TestTableChange(t *testing.T) {
	for _, c := range []struct {
		have, want []int32
		at         int
	}{
		{nil, []int32{4, 5}, 0},
		{[]int32{4, 5}, []int32{4, 5}, 2},
		{[]int32{4, 5}, []int32{4, 5, 9}, 2},
		{[]int32{4, 5, 9}, []int32{4, 5}, 2},
		{[]int32{4, 5, 9}, []int32{4, 7, 9}, 1},
		{[]int32{1}, nil, 0},
	} {
		if got := tableChange(c.have, c.want); got != c.at {
			t.Errorf("tableChange(%v, %v) = %d, want %d", c.have, c.want, got, c.at)
		}
	}
}

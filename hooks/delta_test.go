package hooks

import (
	"slices"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// Adding Delta's rows does what At does when every intervention at the point is an addition:
// per-sequence strengths, a position filter, two vectors summed, rows no addition selects left.
func TestDeltaMatchesAt(t *testing.T) {
	s := NewSet(dims)
	p := Point{Layer: 1, Kind: ResidPost}
	if s.Additive(p) {
		t.Fatal("Additive with nothing registered")
	}
	if err := s.Add("blocks.1.hook_resid_post", Steer{Vector: []float32{1, 2, 3, 4}, SeqAlpha: map[int32]float32{0: 2, 1: -1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("blocks.1.hook_resid_post", Steer{Vector: []float32{0.5, 0, -1, 1}, Alpha: 3, Where: Where{Positions: []int32{1}}}); err != nil {
		t.Fatal(err)
	}
	if !s.Additive(p) {
		t.Fatal("two additions: want Additive")
	}
	seq, pos := []int32{0, 0, 1, 2}, []int32{0, 1, 1, 0}
	x := tensor.FromF32([]float32{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4}, 4, 4)
	want := tensor.FromF32(slices.Clone(x.F32()), 4, 4)
	if err := s.At(p, want, seq, pos); err != nil {
		t.Fatal(err)
	}
	d := s.Delta(nil, p, seq, pos)
	got := slices.Clone(x.F32())
	for i, v := range d.F32() {
		got[i] += v
	}
	if !slices.Equal(got, want.F32()) {
		t.Fatalf("x + Delta = %v, At gives %v", got, want.F32())
	}
	first := slices.Clone(d.F32())
	if again := s.Delta(d, p, seq, pos); again != d || !slices.Equal(again.F32(), first) {
		t.Fatal("Delta into its own result must reuse it and give the same rows")
	}
	if err := s.Read("blocks.1.hook_resid_post"); err != nil {
		t.Fatal(err)
	}
	if s.Additive(p) {
		t.Fatal("a read registered: want not Additive")
	}
}

// Terms gives each addition's vector and per-row strengths: Σ alpha·v over the terms is Delta's
// row, with unselected rows at strength 0 and the vectors the caller's own slices.
func TestTermsMatchDelta(t *testing.T) {
	s := NewSet(dims)
	p := Point{Layer: 1, Kind: ResidPost}
	if got := s.Terms(nil, p, []int32{0}, []int32{0}); len(got) != 0 {
		t.Fatalf("no additions: %d terms", len(got))
	}
	v0, v1 := []float32{1, 2, 3, 4}, []float32{0.5, 0, -1, 1}
	if err := s.Add("blocks.1.hook_resid_post", Steer{Vector: v0, SeqAlpha: map[int32]float32{0: 2, 1: -1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("blocks.1.hook_resid_post", Steer{Vector: v1, Alpha: 3, Where: Where{Positions: []int32{1}}}); err != nil {
		t.Fatal(err)
	}
	seq, pos := []int32{0, 0, 1, 2}, []int32{0, 1, 1, 0}
	terms := s.Terms(nil, p, seq, pos)
	if len(terms) != 2 || &terms[0].Vector[0] != &v0[0] || &terms[1].Vector[0] != &v1[0] {
		t.Fatalf("terms %v: want the two registered vectors themselves", terms)
	}
	if want := []float32{2, 2, -1, 0}; !slices.Equal(terms[0].Alpha, want) {
		t.Errorf("first term's strengths %v, want %v", terms[0].Alpha, want)
	}
	if want := []float32{0, 3, 3, 0}; !slices.Equal(terms[1].Alpha, want) {
		t.Errorf("second term's strengths %v, want %v", terms[1].Alpha, want)
	}
	d := s.Delta(nil, p, seq, pos).F32()
	for r := range seq {
		for k := range v0 {
			var sum float32
			for _, tm := range terms {
				sum += tm.Alpha[r] * tm.Vector[k]
			}
			if sum != d[r*4+k] {
				t.Fatalf("row %d element %d: terms sum to %g, Delta has %g", r, k, sum, d[r*4+k])
			}
		}
	}
	again := s.Terms(terms, p, seq[:2], pos[:2])
	if &again[0] != &terms[0] || len(again[0].Alpha) != 2 || again[1].Alpha[1] != 3 {
		t.Errorf("Terms into its own result must reuse it: %v", again)
	}
	if err := s.Read("blocks.1.hook_resid_post"); err != nil {
		t.Fatal(err)
	}
	if got := s.Terms(nil, p, seq, pos); len(got) != 2 {
		t.Errorf("a read beside the additions: %d terms, want the 2 additions", len(got))
	}
}

func TestActivePoints(t *testing.T) {
	s := NewSet(dims)
	if got := s.ActivePoints(nil); len(got) != 0 {
		t.Fatalf("empty set: %v", got)
	}
	var nilSet *Set
	if got := nilSet.ActivePoints(nil); len(got) != 0 {
		t.Fatalf("nil set: %v", got)
	}
	for _, name := range []string{"ln_final.hook_normalized", "blocks.1.mlp.hook_post", "hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"} {
		if err := s.Read(name); err != nil {
			t.Fatal(err)
		}
	}
	got := s.ActivePoints(nil)
	want := []Point{{-1, Embed}, {0, ResidPost}, {1, ResidPre}, {1, MLPPost}, {-1, FinalNorm}}
	if !slices.Equal(got, want) {
		t.Fatalf("ActivePoints %v, want %v", got, want)
	}
	for _, p := range got {
		if !s.Active(p) {
			t.Errorf("%s listed but not active", p.Name())
		}
	}
}

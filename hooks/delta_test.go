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

package hooks

import (
	"slices"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

// AddAt registers what Add registers for the same single point.
func TestAddAtMatchesAdd(t *testing.T) {
	d := Dims{Layers: 3, DModel: 4, Heads: 2, KVHeads: 1, DHead: 2, DMLP: 6}
	p := Point{Layer: 1, Kind: ResidPost}
	st := Steer{Vector: []float32{1, -2, 3, 0.5}, Alpha: 2, Where: Where{Seqs: []int32{1}}}
	byName, byPoint := NewSet(d), NewSet(d)
	if err := byName.Add(p.Name(), st); err != nil {
		t.Fatal(err)
	}
	if err := byPoint.AddAt(p, st); err != nil {
		t.Fatal(err)
	}
	seq, pos := []int32{0, 1, 1}, []int32{4, 2, 3}
	x, y := tensor.New(tensor.F32, 3, 4), tensor.New(tensor.F32, 3, 4)
	for i := range x.F32() {
		x.F32()[i], y.F32()[i] = float32(i), float32(i)
	}
	if err := byName.At(p, x, seq, pos); err != nil {
		t.Fatal(err)
	}
	if err := byPoint.At(p, y, seq, pos); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(x.F32(), y.F32()) || x.F32()[4] != 4+2 || x.F32()[0] != 0 {
		t.Errorf("Add gave %v, AddAt %v", x.F32(), y.F32())
	}
	for _, bad := range []struct {
		p Point
		n int
	}{{Point{Layer: 3, Kind: ResidPost}, 4}, {Point{Layer: 0, Kind: Pattern}, 2}, {Point{Layer: 0, Kind: MLPPost}, 4}} {
		if err := byPoint.AddAt(bad.p, Steer{Vector: make([]float32, bad.n)}); err == nil {
			t.Errorf("%+v with %d values was accepted", bad.p, bad.n)
		}
	}
}

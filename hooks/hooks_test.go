package hooks

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/tensor"
)

var dims = Dims{Layers: 3, DModel: 4, Heads: 4, KVHeads: 2, DHead: 2, DMLP: 6}

func TestNamesRoundTrip(t *testing.T) {
	all := All(3)
	if len(all) != Count(3) || all[0].Name() != "hook_embed" || all[len(all)-1].Name() != "ln_final.hook_normalized" {
		t.Fatalf("All(3): %d points, first %s, last %s", len(all), all[0], all[len(all)-1])
	}
	for i, p := range all {
		if p.Index(3) != i {
			t.Errorf("%s has index %d, want %d", p, p.Index(3), i)
		}
		q, err := Parse(p.Name(), 3)
		if err != nil || q != p {
			t.Errorf("Parse(%q) = %v, %v", p.Name(), q, err)
		}
	}
	for _, name := range []string{"blocks.2.attn.hook_pattern", "blocks.0.mlp.hook_post", "blocks.1.hook_resid_mid"} {
		if _, err := Parse(name, 3); err != nil {
			t.Error(err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for name, want := range map[string]string{
		"blocks.3.hook_resid_post":  "layer 3 does not exist (the model has layers 0 to 2)",
		"blocks.x.hook_resid_post":  "want blocks.<layer>.<hook>",
		"blocks.01.hook_resid_post": "want blocks.<layer>.<hook>",
		"blocks.1.hook_resid":       "a layer has hook_resid_pre",
		"resid_post":                "unknown hook point",
		"":                          "unknown hook point",
	} {
		if _, err := Parse(name, 3); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q): %v, want %q", name, err, want)
		}
	}
}

func TestMatch(t *testing.T) {
	ps, err := Match("blocks.*.hook_resid_post", 3)
	if err != nil || len(ps) != 3 || ps[2].Name() != "blocks.2.hook_resid_post" {
		t.Errorf("resid_post pattern: %v %v", ps, err)
	}
	ps, err = Match("blocks.1.attn.*, hook_embed", 3)
	if err != nil || len(ps) != 6 || ps[0].Kind != Embed {
		t.Errorf("attn of layer 1 and embed: %v %v", ps, err)
	}
	// hook_* matches the one-part suffixes only (resid_pre, attn_out, resid_mid, mlp_out, resid_post).
	ps, _ = Match("blocks.[02].hook_*", 3)
	if len(ps) != 2*5 {
		t.Errorf("layers 0 and 2, hook_*: %d points %v", len(ps), ps)
	}
	if _, err := Match("blocks.*.hook_nothing", 3); err == nil || !strings.Contains(err.Error(), "matches no hook point") {
		t.Errorf("pattern matching nothing: %v", err)
	}
	if _, err := Match("blocks.[.hook_z", 3); err == nil {
		t.Error("malformed pattern accepted")
	}
	if _, err := Match(" , ", 3); err == nil {
		t.Error("empty pattern accepted")
	}
}

// batch is a 2-sequence batch: sequence 7 at positions 0-2 and sequence 3 at positions 0-1.
var seq, pos = []int32{7, 7, 3, 7, 3}, []int32{0, 1, 0, 2, 1}

// coded makes an (n, width) activation whose values encode (row, column).
func coded(n, width int) *tensor.Tensor {
	v := make([]float32, n*width)
	for i := range v {
		v[i] = float32(100*(i/width) + i%width)
	}
	return tensor.FromF32(v, n, width)
}

func TestReadSplitsSequences(t *testing.T) {
	s := NewSet(dims)
	if err := s.Read("blocks.0.hook_resid_pre"); err != nil {
		t.Fatal(err)
	}
	p := Point{0, ResidPre}
	x := coded(5, 4)
	if err := s.At(p, x, seq, pos); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Cache.Get(7, p.Name())
	b, _ := s.Cache.Get(3, p.Name())
	if a.Shape[0] != 3 || b.Shape[0] != 2 {
		t.Fatalf("shapes %v %v", a.Shape, b.Shape)
	}
	// Sequence 7 position 2 was batch row 3.
	if got := a.F32()[2*4+1]; got != 301 {
		t.Errorf("seq 7 pos 2 col 1 = %g, want 301", got)
	}
	if got := b.F32()[1*4+3]; got != 403 {
		t.Errorf("seq 3 pos 1 col 3 = %g, want 403", got)
	}
	// A later decode step grows the tensor.
	s.At(p, coded(1, 4), []int32{3}, []int32{2})
	b, _ = s.Cache.Get(3, p.Name())
	if b.Shape[0] != 3 || b.F32()[2*4+2] != 2 || b.F32()[1*4+3] != 403 {
		t.Errorf("after a decode step: %v %v", b.Shape, b.F32())
	}
}

// ReadPoints reads exactly the points Read's names match: the same points active, the same values
// cached.
func TestReadPoints(t *testing.T) {
	byName, byPoint := NewSet(dims), NewSet(dims)
	if err := byName.Read("blocks.0.hook_resid_pre,blocks.1.hook_mlp_out"); err != nil {
		t.Fatal(err)
	}
	byPoint.ReadPoints([]Point{{0, ResidPre}, {1, MLPOut}})
	for _, p := range All(dims.Layers) {
		if byName.Active(p) != byPoint.Active(p) {
			t.Fatalf("%s: active %v by name, %v by point", p.Name(), byName.Active(p), byPoint.Active(p))
		}
	}
	x := coded(5, 4)
	for _, s := range []*Set{byName, byPoint} {
		if err := s.At(Point{0, ResidPre}, x, seq, pos); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := byName.Cache.Get(7, "blocks.0.hook_resid_pre")
	b, _ := byPoint.Cache.Get(7, "blocks.0.hook_resid_pre")
	if a == nil || b == nil || fmt.Sprint(a.F32()) != fmt.Sprint(b.F32()) {
		t.Errorf("cached %v by name, %v by point", a, b)
	}
}

func TestReplaceWhere(t *testing.T) {
	s := NewSet(dims)
	val := tensor.New(tensor.F32, 3, 4, 2) // hook_z for one sequence: (pos, head, d_head)
	for i := range val.F32() {
		val.F32()[i] = -1 - float32(i)
	}
	err := s.Replace("blocks.1.attn.hook_z", val, Where{Seqs: []int32{7}, Positions: []int32{1, 2}, Heads: []int{3}})
	if err != nil {
		t.Fatal(err)
	}
	x := coded(5, 8)
	if err := s.At(Point{1, Z}, x, seq, pos); err != nil {
		t.Fatal(err)
	}
	got := x.F32()
	for i := range seq {
		for k := 0; k < 8; k++ {
			want := float32(100*i + k)
			if seq[i] == 7 && (pos[i] == 1 || pos[i] == 2) && k/2 == 3 {
				want = -1 - float32(int(pos[i])*8+k)
			}
			if got[i*8+k] != want {
				t.Errorf("row %d col %d = %g, want %g", i, k, got[i*8+k], want)
			}
		}
	}
}

func TestPatchErrors(t *testing.T) {
	s := NewSet(dims)
	if err := s.Replace("blocks.0.hook_resid_post", tensor.New(tensor.F32, 3, 5), Where{}); err == nil || !strings.Contains(err.Error(), "want (pos, [4])") {
		t.Errorf("wrong width: %v", err)
	}
	if err := s.Replace("blocks.0.attn.hook_k", tensor.New(tensor.F32, 3, 2, 2), Where{Heads: []int{2}}); err == nil || !strings.Contains(err.Error(), "head 2 out of range 0 to 1") {
		t.Errorf("kv head out of range: %v", err)
	}
	if err := s.Replace("blocks.0.hook_resid_post", tensor.New(tensor.F32, 3, 4), Where{Heads: []int{0}}); err == nil || !strings.Contains(err.Error(), "no heads") {
		t.Errorf("heads on a residual point: %v", err)
	}
	if err := s.Replace("blocks.0.attn.hook_pattern", tensor.New(tensor.F32, 4, 3, 2), Where{}); err == nil || !strings.Contains(err.Error(), "(heads 4, pos, pos)") {
		t.Errorf("bad pattern: %v", err)
	}
	if err := s.Replace("blocks.0.hook_resid_post", tensor.New(tensor.I32, 3, 4), Where{}); err == nil {
		t.Error("integer patch accepted")
	}
	if err := s.Replace("blocks.9.hook_resid_post", tensor.New(tensor.F32, 3, 4), Where{}); err == nil {
		t.Error("patch of a missing layer accepted")
	}
	// A patch that does not reach the positions of the run fails at run time, naming the point.
	s.Replace("blocks.0.hook_resid_post", tensor.New(tensor.F32, 2, 4), Where{})
	if err := s.At(Point{0, ResidPost}, coded(5, 4), seq, pos); err == nil || !strings.Contains(err.Error(), "covers 2 positions, the run reached position 2") {
		t.Errorf("short patch: %v", err)
	}
	if err := s.Add("blocks.*.hook_resid_post", Steer{Vector: make([]float32, 3)}); err == nil || !strings.Contains(err.Error(), "vector has 3 values, the point has 4") {
		t.Errorf("short steering vector: %v", err)
	}
	if err := s.ReplaceFrom("blocks.0.hook_resid_pre", NewCache(), 0, Where{}); err == nil || !strings.Contains(err.Error(), "holds no blocks.0.hook_resid_pre") {
		t.Errorf("patch from an empty cache: %v", err)
	}
}

func TestSteer(t *testing.T) {
	s := NewSet(dims)
	err := s.Add("blocks.2.hook_resid_post", Steer{Vector: []float32{1, 0, 0, -1}, Alpha: 2, SeqAlpha: map[int32]float32{3: 10}, Where: Where{Positions: []int32{1}}})
	if err != nil {
		t.Fatal(err)
	}
	x := coded(5, 4)
	s.At(Point{2, ResidPost}, x, seq, pos)
	want := coded(5, 4).F32()
	want[1*4+0] += 2  // seq 7 pos 1: alpha 2
	want[1*4+3] -= 2  //
	want[4*4+0] += 10 // seq 3 pos 1: its own alpha
	want[4*4+3] -= 10 //
	for i, v := range x.F32() {
		if v != want[i] {
			t.Errorf("[%d] = %g, want %g", i, v, want[i])
		}
	}
}

func TestPatternReadAndCacheFile(t *testing.T) {
	s := NewSet(dims)
	s.Read("blocks.0.attn.hook_pattern")
	// Sequence 7, positions 0-2 in one call: (n=3, heads=4, ctx=3) probabilities encoded by (pos, head, key).
	x := tensor.New(tensor.F32, 3, 4, 3)
	for i := 0; i < 3; i++ {
		for h := 0; h < 4; h++ {
			for k := 0; k <= i; k++ {
				x.F32()[(i*4+h)*3+k] = float32(100*i + 10*h + k)
			}
		}
	}
	if err := s.At(Point{0, Pattern}, x, []int32{7, 7, 7}, []int32{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	p, _ := s.Cache.Get(7, "blocks.0.attn.hook_pattern")
	if p.String() != "F32[4 3 3]" || p.F32()[(3*3+2)*3+1] != 231 {
		t.Fatalf("pattern %v: head 3, query 2, key 1 = %g, want 231", p, p.F32()[(3*3+2)*3+1])
	}
	path := filepath.Join(t.TempDir(), "acts.safetensors")
	if err := s.Cache.Save(path, 7, map[string]string{"prompt": "x"}); err != nil {
		t.Fatal(err)
	}
	c, meta, err := LoadCache(path)
	if err != nil {
		t.Fatal(err)
	}
	q, ok := c.Get(0, "blocks.0.attn.hook_pattern")
	if !ok || meta["prompt"] != "x" || q.F32()[(3*3+2)*3+1] != 231 {
		t.Errorf("loaded %v %v", q, meta)
	}
	if err := s.Cache.Save(path, 99, nil); err == nil {
		t.Error("saved an empty sequence")
	}
}

// A recycled cache is empty, and the next run's tensors at the same points reuse its memory,
// zeroed where the run writes nothing (positions before a run's first) and holding the new values.
func TestCacheRecycle(t *testing.T) {
	s := NewSet(dims)
	p := Point{0, ResidPre}
	s.ReadPoints([]Point{p})
	if err := s.At(p, coded(5, 4), seq, pos); err != nil {
		t.Fatal(err)
	}
	old, _ := s.Cache.Get(7, p.Name())
	s.Cache.Recycle()
	if _, ok := s.Cache.Get(7, p.Name()); ok || len(s.Cache.Seqs()) != 0 {
		t.Fatalf("a recycled cache still holds sequences %v", s.Cache.Seqs())
	}
	// Sequence 7 again, positions 1 and 2 only.
	if err := s.At(p, coded(2, 4), []int32{7, 7}, []int32{1, 2}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Cache.Get(7, p.Name())
	if &got.Data[0] != &old.Data[0] {
		t.Errorf("the recycled tensor of sequence 7 was not reused")
	}
	want := append(make([]float32, 4), coded(2, 4).F32()...)
	for i, v := range got.F32() {
		if v != want[i] {
			t.Fatalf("after recycling: %v, want %v", got.F32(), want)
		}
	}
}

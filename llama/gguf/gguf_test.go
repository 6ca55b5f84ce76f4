package gguf

import (
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestDequantizeMatchesGGUFPy reads testdata/dequant.gguf (scripts/reference/make_gguf_fixtures.py):
// random blocks of every supported type, written by llama.cpp's gguf-py, beside gguf-py's own
// dequantization. tiller's must be bit-identical: both compute the same float32 products and sums.
func TestDequantizeMatchesGGUFPy(t *testing.T) {
	g, err := Open("testdata/dequant.gguf")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, typ := range []TensorType{F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K} {
		q, ok := g.Tensor(typ.String())
		w, okw := g.Tensor(typ.String() + ".want")
		if !ok || !okw {
			t.Fatalf("fixture has no %s tensor", typ)
		}
		if q.Type != typ || w.Type != F32 || !reflect.DeepEqual(q.Dims, []int{512, 3}) || !reflect.DeepEqual(w.Dims, q.Dims) {
			t.Fatalf("%s: tensor entries %+v, %+v", typ, *q, *w)
		}
		got := make([]float32, q.Elements())
		for i := range got {
			got[i] = float32(math.NaN()) // poison: an element left unwritten shows
		}
		if err := Dequantize(q.Type, g.Bytes(q), got); err != nil {
			t.Fatal(err)
		}
		want := make([]float32, w.Elements())
		if err := Dequantize(F32, g.Bytes(w), want); err != nil {
			t.Fatal(err)
		}
		bad, nonzero := 0, 0
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				if bad < 3 {
					t.Errorf("%s: element %d (block %d) = %g, gguf-py %g", typ, i, i/q.Type.BlockSize(), got[i], want[i])
				}
				bad++
			}
			if want[i] != 0 {
				nonzero++
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d elements differ from gguf-py", typ, bad, len(want))
		}
		if nonzero < len(want)/2 {
			t.Errorf("%s: only %d of %d reference values are nonzero; the fixture tests little", typ, nonzero, len(want))
		}
	}
}

func TestMetadataValues(t *testing.T) {
	g, err := Open("testdata/dequant.gguf")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ints := map[string]int64{"test.u8": 200, "test.i8": -100, "test.u16": 60000, "test.i16": -30000,
		"test.u32": 4000000000, "test.i32": -2000000000, "test.i64": -(1 << 62)}
	for k, want := range ints {
		if got, err := g.Int(k); err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", k, got, err, want)
		}
	}
	if v := g.Meta["test.u64"].V; v != uint64(1<<63) {
		t.Errorf("test.u64 = %v", v)
	}
	if _, err := g.Int("test.u64"); err == nil {
		t.Error("2^63 read as an int64")
	}
	if f, err := g.Float("test.f32"); err != nil || f != 0.15625 {
		t.Errorf("test.f32 = %v, %v", f, err)
	}
	if f, err := g.Float("test.f64"); err != nil || f != -2.5e-300 {
		t.Errorf("test.f64 = %v, %v", f, err)
	}
	if b, err := g.Bool("test.bool"); err != nil || !b {
		t.Errorf("test.bool = %v, %v", b, err)
	}
	if s, err := g.String("test.string"); err != nil || s != "héllo\n" {
		t.Errorf("test.string = %q, %v", s, err)
	}
	if s, err := g.Strings("test.strings"); err != nil || !reflect.DeepEqual(s, []string{"a", "", "ünï"}) {
		t.Errorf("test.strings = %q, %v", s, err)
	}
	if s, err := g.Ints("test.ints"); err != nil || !reflect.DeepEqual(s, []int64{1, -2, 3}) {
		t.Errorf("test.ints = %v, %v", s, err)
	}
	if a, err := g.String("general.architecture"); err != nil || a != "llama" {
		t.Errorf("general.architecture = %q, %v", a, err)
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{func() error { _, err := g.String("test.u8"); return err }(), "metadata test.u8 is u8, want a string"},
		{func() error { _, err := g.Int("absent.key"); return err }(), "no metadata key absent.key"},
		{func() error { _, err := g.Strings("test.ints"); return err }(), "is array of i32, want an array of strings"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("got %v, want an error with %q", tc.err, tc.want)
		}
	}
}

func TestDequantizeRejectsWrongSizes(t *testing.T) {
	if err := Dequantize(Q4_K, make([]byte, 144), make([]float32, 255)); err == nil {
		t.Error("255 elements of Q4_K")
	}
	if err := Dequantize(Q8_0, make([]byte, 33), make([]float32, 32)); err == nil {
		t.Error("a short Q8_0 block")
	}
	if err := Dequantize(TensorType(11), make([]byte, 110), make([]float32, 256)); err == nil || !strings.Contains(err.Error(), "Q3_K is not supported") {
		t.Errorf("Q3_K: %v", err)
	}
	if err := Dequantize(TensorType(99), nil, nil); err == nil || !strings.Contains(err.Error(), "unknown tensor type 99") {
		t.Errorf("type 99: %v", err)
	}
}

func TestOpenNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string][]byte{"short.gguf": []byte("GG"), "magic.gguf": []byte("GGML\x03\x00\x00\x00")} {
		p := dir + "/" + name
		os.WriteFile(p, body, 0o644)
		if _, err := Open(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("a folder: %v", err)
	}
}

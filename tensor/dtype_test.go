package tensor

import (
	"math"
	"testing"
)

func TestBF16RoundsToNearestEven(t *testing.T) {
	cases := []struct {
		in   uint32 // float32 bits
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1.0 exactly
		{0x3f808000, 0x3f80}, // halfway, even below: stays
		{0x3f818000, 0x3f82}, // halfway, odd below: rounds up to even
		{0x3f808001, 0x3f81}, // just above halfway: up
		{0x3f807fff, 0x3f80}, // just below halfway: down
		{0xbf818000, 0xbf82}, // negative, same rule on the magnitude
		{0x7f7fffff, 0x7f80}, // largest finite float rounds to +Inf
		{0x7f800000, 0x7f80}, // +Inf
		{0xff800000, 0xff80}, // -Inf
		{0x00000001, 0x0000}, // smallest denormal rounds to zero
		{0x80000000, 0x8000}, // -0 keeps its sign
	}
	for _, c := range cases {
		if got := BF16FromF32(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("BF16FromF32(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	nan := BF16FromF32(math.Float32frombits(0x7f800001)) // a NaN whose payload sits in the dropped bits
	if !math.IsNaN(float64(F32FromBF16(nan))) {
		t.Errorf("NaN became %#04x", nan)
	}
}

// Every bfloat16 widens exactly and rounds back to itself.
func TestBF16RoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F32FromBF16(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := BF16FromF32(f); got != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, got)
		}
	}
}

func TestF16RoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F32FromF16(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := F16FromF32(f); got != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, got)
		}
	}
	if got := F32FromF16(0x3c00); got != 1 {
		t.Errorf("0x3c00 = %g, want 1", got)
	}
}

func TestParseDType(t *testing.T) {
	for s, want := range map[string]DType{"BF16": BF16, "bfloat16": BF16, "F32": F32, "float16": F16, "I32": I32,
		"F64": F64, "f64": F64, "float64": F64} {
		if got, err := ParseDType(s); err != nil || got != want {
			t.Errorf("ParseDType(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseDType("F8_E4M3"); err == nil {
		t.Error("F8_E4M3 parsed")
	}
}

func TestTensorViews(t *testing.T) {
	x := New(F32, 3, 4)
	for i := range x.F32() {
		x.F32()[i] = float32(i)
	}
	if x.Rows() != 3 || x.Cols() != 4 || x.Numel() != 12 {
		t.Fatalf("shape helpers: %d %d %d", x.Rows(), x.Cols(), x.Numel())
	}
	s := x.Slice(1, 3)
	if s.F32()[0] != 4 || s.Numel() != 8 {
		t.Errorf("slice: %v", s.F32())
	}
	s.F32()[0] = -1
	if x.F32()[4] != -1 {
		t.Error("slice does not share storage")
	}
	r := x.Reshape(2, 6)
	if r.Cols() != 6 || r.F32()[4] != -1 {
		t.Errorf("reshape: %v", r)
	}
	b := x.Convert(BF16)
	if got := b.ToF32()[5]; got != 5 {
		t.Errorf("convert to bf16: %g", got)
	}
	if _, err := Wrap(F32, make([]byte, 7), 2); err == nil {
		t.Error("Wrap accepted 7 bytes for 2 floats")
	}
	defer func() {
		if recover() == nil {
			t.Error("F32 view of a BF16 tensor did not panic")
		}
	}()
	b.F32()
}

// F64 tensors: size and name, the view, FromF64 sharing, exact widening by ToF64 and Convert, and
// rounding on the way down.
func TestF64(t *testing.T) {
	if F64.Size() != 8 || F64.String() != "F64" {
		t.Fatalf("F64: size %d, name %q", F64.Size(), F64.String())
	}
	v := []float64{1 + 0x1p-40, -2.5, 3e-300, 7}
	x := FromF64(v, 2, 2)
	x.F64()[3] = 8
	if v[3] != 8 || !x.Aligned() {
		t.Error("FromF64 does not share its slice")
	}
	if got := x.ToF64(); got[0] != 1+0x1p-40 || got[2] != 3e-300 {
		t.Errorf("ToF64: %v", got)
	}
	if got := x.ToF32(); got[0] != 1 || got[1] != -2.5 || got[2] != 0 {
		t.Errorf("ToF32 of F64: %v", got)
	}
	if got := x.Convert(BF16).ToF64(); got[1] != -2.5 || got[3] != 8 {
		t.Errorf("F64 to BF16: %v", got)
	}
	h := FromF32([]float32{0.1, -3}, 2).Convert(BF16)
	if got := h.Convert(F64).F64(); got[0] != float64(F32FromBF16(h.U16()[0])) || got[1] != -3 {
		t.Errorf("BF16 to F64 is not exact: %v", got)
	}
	if got := FromF64([]float64{-2.7, 1 << 40}, 2).Convert(I32).I32(); got[0] != -2 {
		t.Errorf("F64 to I32: %v", got)
	}
	if got := FromF32([]float32{1, 2}, 2).ToF64(); got[1] != 2 {
		t.Errorf("ToF64 of F32: %v", got)
	}
	c := NewKVCacheOf(NewCPU(1), F64, 2, 1, 3, 4, 2)
	if c.DType() != F64 || c.K[1].DType != F64 || c.V[0].Shape[0] != 2 || c.Blocks() != 2 || c.FreeBlocks() != 2 {
		t.Errorf("F64 KV cache: %s, %v", c.DType(), c.V[0])
	}
	if c := NewKVCacheOf(NewCPU(1), F32, 1, 1, 3, 4, 2); c.DType() != F32 {
		t.Errorf("F32 KV cache of NewKVCacheOf: %s", c.DType())
	}
	defer func() {
		if recover() == nil {
			t.Error("F32 view of an F64 tensor did not panic")
		}
	}()
	x.F32()
}

func TestKVCacheBlocks(t *testing.T) {
	c := NewKVCache(NewCPU(1), 1, 1, 2, 4, 3)
	if err := c.Reserve(0, 5); err != nil { // 2 blocks
		t.Fatal(err)
	}
	if c.Capacity(0) != 8 || c.FreeBlocks() != 1 {
		t.Fatalf("capacity %d, free %d", c.Capacity(0), c.FreeBlocks())
	}
	if err := c.Reserve(1, 8); err == nil {
		t.Fatal("reserved 2 blocks with 1 free")
	}
	if c.FreeBlocks() != 1 {
		t.Fatal("a failed reserve took blocks")
	}
	if c.row(0, 5) != 1*4+1 {
		t.Errorf("position 5 of sequence 0 at row %d", c.row(0, 5))
	}
	c.Release(0)
	if c.FreeBlocks() != 3 || c.Capacity(0) != 0 {
		t.Errorf("after release: free %d, capacity %d", c.FreeBlocks(), c.Capacity(0))
	}
	if err := c.Reserve(1, 12); err != nil {
		t.Fatal(err)
	}
}

// A device tensor carries an address instead of host bytes: views offset the address, and a host
// view of it is a programmer error.
func TestDeviceTensorViews(t *testing.T) {
	d := &Tensor{Shape: []int{4, 3}, DType: BF16, Dev: 0x1000}
	if s := d.Slice(1, 3); s.Dev != 0x1000+3*2 || s.Shape[0] != 2 || s.OnHost() {
		t.Errorf("slice of a device tensor: %+v", s)
	}
	if r := d.Reshape(12); r.Dev != 0x1000 {
		t.Errorf("reshape lost the address: %+v", r)
	}
	defer func() {
		if recover() == nil {
			t.Error("host view of a device tensor did not panic")
		}
	}()
	d.U16()
}

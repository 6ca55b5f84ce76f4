package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/tillerlm/tiller/tensor"
)

// rawFile builds a safetensors file from a header string and a data length, without the writer's
// checks, so tests can make headers that lie.
func rawFile(t *testing.T, header string, data int) string {
	t.Helper()
	b := make([]byte, 8, 8+len(header)+data)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	for i := 0; i < data; i++ {
		b = append(b, byte(i))
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRoundTrip(t *testing.T) {
	a := tensor.FromF32([]float32{1, -2, 3.5, 4, 5, 6}, 2, 3)
	b := tensor.New(tensor.BF16, 3)
	for i := range b.U16() {
		b.U16()[i] = tensor.BF16FromF32(float32(i) + 0.5)
	}
	c := tensor.New(tensor.I32, 1, 2)
	c.I32()[0], c.I32()[1] = -7, 1<<30
	path := filepath.Join(t.TempDir(), "t.safetensors")
	meta := map[string]string{"format": "pt", "note": "x"}
	if err := Save(path, []string{"a", "b.weight", "c"}, []*tensor.Tensor{a, b, c}, meta); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Header.DataAt%8 != 0 {
		t.Errorf("data section at %d, want a multiple of 8", f.Header.DataAt)
	}
	if f.Header.Metadata["note"] != "x" {
		t.Errorf("metadata %v", f.Header.Metadata)
	}
	got, err := f.Tensor("a")
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != "F32[2 3]" || got.F32()[2] != 3.5 {
		t.Errorf("a = %v %v", got, got.F32())
	}
	gb, _ := f.Tensor("b.weight")
	if tensor.F32FromBF16(gb.U16()[2]) != 2.5 {
		t.Errorf("b = %v", gb.ToF32())
	}
	gc, _ := f.Tensor("c")
	if gc.I32()[0] != -7 || gc.I32()[1] != 1<<30 {
		t.Errorf("c = %v", gc.I32())
	}
	if n := f.Advise("a"); n != 24 {
		t.Errorf("Advise touched %d bytes, want 24", n)
	}
	if _, err := f.Tensor("missing"); err == nil || !strings.Contains(err.Error(), `"missing"`) {
		t.Errorf("missing tensor: %v", err)
	}
}

func TestWriterChecksLength(t *testing.T) {
	path := filepath.Join(t.TempDir(), "short.safetensors")
	w, err := Create(path, []Info{{Name: "a", DType: "F32", Shape: []int{4}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 12))
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "12 of its 16 bytes") {
		t.Errorf("short tensor: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a failed write left %s behind", path)
	}
	w, _ = Create(path, []Info{{Name: "a", DType: "F32", Shape: []int{1}}}, nil)
	if _, err := w.Write(make([]byte, 5)); err == nil || !strings.Contains(err.Error(), "past the last tensor") {
		t.Errorf("long write: %v", err)
	}
	w.Close()
}

func TestBadHeaders(t *testing.T) {
	cases := []struct {
		name, header string
		data         int
		want         string
	}{
		{"not json", `{"a": `, 0, "not a JSON object"},
		{"not an object", `[1, 2]`, 0, "not a JSON object"},
		{"offset past end", `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4, "run past the end"},
		{"unknown dtype", `{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}`, 8, `unknown dtype "Q4"`},
		{"size mismatch", `{"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}}`, 8, "needs 6 bytes"},
		{"overlap", `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12, "overlap"},
		{"reversed offsets", `{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}`, 8, "increasing pair"},
		{"missing field", `{"w":{"dtype":"F32","shape":[1]}}`, 4, "needs dtype, shape and data_offsets"},
		{"negative dim", `{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4, "negative dimension"},
		{"overflow", `{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8, "overflows"},
		{"three offsets", `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 8, "has 3 values"},
		{"bad metadata", `{"__metadata__":{"a":1}}`, 0, "__metadata__"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := rawFile(t, c.header, c.data)
			_, err := Open(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %v, want one naming %s and saying %q", err, path, c.want)
			}
		})
	}
}

func TestTruncatedFiles(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte{1, 2, 3}, 0o644)
	if _, err := Open(short); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("3-byte file: %v", err)
	}
	long := make([]byte, 8)
	binary.LittleEndian.PutUint64(long, 1000)
	lied := filepath.Join(dir, "lied")
	os.WriteFile(lied, append(long, `{}`...), 0o644)
	if _, err := Open(lied); err == nil || !strings.Contains(err.Error(), "runs past the end") {
		t.Errorf("header length past the end: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "absent")); err == nil || !strings.Contains(err.Error(), "absent") {
		t.Errorf("absent file: %v", err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory: %v", err)
	}
}

func TestUnsupportedDTypeForCompute(t *testing.T) {
	path := rawFile(t, `{"w":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, 8)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Tensor("w"); err == nil || !strings.Contains(err.Error(), "I64") {
		t.Errorf("I64 tensor: %v", err)
	}
}

func TestMisalignedDataIsCopied(t *testing.T) {
	// A header whose length is not a multiple of 4 puts F32 data off its alignment in the mapping.
	h := `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	for (8+len(h))%4 == 0 {
		h += " "
	}
	f, err := Open(rawFile(t, h, 4))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := f.Tensor("w")
	if err != nil {
		t.Fatal(err)
	}
	if want := math.Float32frombits(0x03020100); !w.Aligned() || w.F32()[0] != want {
		t.Errorf("misaligned tensor read as %v (aligned %v), want %v", w.F32(), w.Aligned(), want)
	}
}

func FuzzParseHeader(f *testing.F) {
	seed := func(h string, data int) []byte {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint64(b, uint64(len(h)))
		return append(append(b, h...), make([]byte, data)...)
	}
	f.Add(seed(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	f.Add(seed(`{"__metadata__":{"a":"b"},"w":{"dtype":"BF16","shape":[2,1],"data_offsets":[0,4]}}`, 4))
	f.Add(seed(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12))
	if fixtures, _ := filepath.Glob("../testdata/hf/*/*.safetensors"); len(fixtures) > 0 {
		for _, p := range fixtures {
			if b, err := os.ReadFile(p); err == nil && len(b) < 1<<20 {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader(b, int64(len(b)))
		if err != nil {
			return
		}
		// Whatever parses must describe ranges inside the data that do not overlap.
		var end int64
		for _, info := range h.Tensors {
			if info.Begin < end || info.End > int64(len(b))-h.DataAt || info.End < info.Begin {
				t.Fatalf("accepted bad range %+v", info)
			}
			end = info.End
		}
	})
}

// Resident swaps the mapping for a copy in the process's memory: the tensors taken afterwards
// hold the same bytes, progress reaches the file's size, a second call does nothing, and Close
// gives the copy back.
func TestResident(t *testing.T) {
	a := tensor.New(tensor.BF16, 300, 7)
	for i := range a.U16() {
		a.U16()[i] = tensor.BF16FromF32(float32(i%97) - 40.25)
	}
	path := filepath.Join(t.TempDir(), "t.safetensors")
	if err := Save(path, []string{"a"}, []*tensor.Tensor{a}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var last int64
	if err := f.Resident(func(done int64) { last = done }); err != nil {
		t.Fatal(err)
	}
	if last != f.Size() {
		t.Errorf("progress ended at %d bytes of %d", last, f.Size())
	}
	if addr := uintptr(unsafe.Pointer(&f.data[0])); addr%hugePage != 0 {
		t.Errorf("the copy starts at %#x, not on a huge-page boundary", addr)
	}
	got, err := f.Tensor("a")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, a.Data) {
		t.Error("the resident tensor differs from the file's")
	}
	at := &f.data[0]
	last = -1
	if err := f.Resident(func(done int64) { last = done }); err != nil || last != -1 || &f.data[0] != at {
		t.Errorf("a second Resident copied again (err %v, progress %d)", err, last)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := f.Resident(nil); err != nil {
		t.Errorf("Resident after Close: %v", err)
	}
}

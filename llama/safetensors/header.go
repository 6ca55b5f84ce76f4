// Package safetensors reads and writes the safetensors format: an 8-byte little-endian header
// length N, N bytes of JSON describing each tensor (dtype, shape, byte range), then the data.
// Reading validates the header completely before any tensor is used: every range lies inside the
// file, no two overlap, and each range holds exactly shape × dtype bytes.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
)

// maxHeader bounds the JSON header, as the reference implementation does, so a corrupt length
// cannot make us allocate gigabytes.
const maxHeader = 100 << 20

// dtypeSizes are the element sizes of every dtype the format defines.
var dtypeSizes = map[string]int{
	"F64": 8, "F32": 4, "F16": 2, "BF16": 2,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
	"F8_E4M3": 1, "F8_E5M2": 1,
}

// Info describes one tensor of a file.
type Info struct {
	Name  string
	DType string // as the file spells it: "BF16", "F32", …
	Shape []int
	Begin int64 // byte offsets relative to the start of the data section
	End   int64
}

// Header is a parsed and validated safetensors header.
type Header struct {
	Tensors  []Info // in order of their data offsets
	Metadata map[string]string
	DataAt   int64 // file offset of the data section: 8 + N
}

// ParseHeader validates the header at the start of a file of fileSize bytes. prefix holds at least
// the first 8 bytes; it must hold the whole header (8 + N bytes) or ParseHeader reports how many
// it needs.
func ParseHeader(prefix []byte, fileSize int64) (*Header, error) {
	if fileSize < 8 || len(prefix) < 8 {
		return nil, fmt.Errorf("file of %d bytes is too short for a safetensors header", fileSize)
	}
	n := binary.LittleEndian.Uint64(prefix[:8])
	if n > maxHeader {
		return nil, fmt.Errorf("header length %d exceeds the %d-byte limit", n, maxHeader)
	}
	if int64(n) > fileSize-8 {
		return nil, fmt.Errorf("header length %d runs past the end of the %d-byte file", n, fileSize)
	}
	if uint64(len(prefix)) < 8+n {
		return nil, fmt.Errorf("need %d header bytes, have %d", 8+n, len(prefix))
	}
	raw := map[string]json.RawMessage{}
	if err := json.Unmarshal(prefix[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("header is not a JSON object: %v", err)
	}
	h := &Header{DataAt: 8 + int64(n), Metadata: map[string]string{}}
	dataLen := fileSize - h.DataAt
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &h.Metadata); err != nil {
				return nil, fmt.Errorf("__metadata__ is not an object of strings: %v", err)
			}
			continue
		}
		info, err := parseInfo(name, msg, dataLen)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, info)
	}
	sort.Slice(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.Name < b.Name
	})
	for i := 1; i < len(h.Tensors); i++ {
		prev, cur := h.Tensors[i-1], h.Tensors[i]
		if cur.Begin < prev.End {
			return nil, fmt.Errorf("tensors %q [%d, %d) and %q [%d, %d) overlap",
				prev.Name, prev.Begin, prev.End, cur.Name, cur.Begin, cur.End)
		}
	}
	return h, nil
}

func parseInfo(name string, msg json.RawMessage, dataLen int64) (Info, error) {
	var e struct {
		DType   *string  `json:"dtype"`
		Shape   *[]int64 `json:"shape"`
		Offsets *[]int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(msg, &e); err != nil {
		return Info{}, fmt.Errorf("tensor %q: malformed entry: %v", name, err)
	}
	if e.DType == nil || e.Shape == nil || e.Offsets == nil {
		return Info{}, fmt.Errorf("tensor %q: entry needs dtype, shape and data_offsets", name)
	}
	size, ok := dtypeSizes[*e.DType]
	if !ok {
		return Info{}, fmt.Errorf("tensor %q: unknown dtype %q", name, *e.DType)
	}
	if len(*e.Offsets) != 2 {
		return Info{}, fmt.Errorf("tensor %q: data_offsets has %d values, want 2", name, len(*e.Offsets))
	}
	begin, end := (*e.Offsets)[0], (*e.Offsets)[1]
	if begin < 0 || end < begin {
		return Info{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] are not an increasing pair", name, begin, end)
	}
	if end > dataLen {
		return Info{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] run past the end of the %d data bytes (file truncated?)", name, begin, end, dataLen)
	}
	shape := make([]int, len(*e.Shape))
	bytes := int64(size)
	for i, d := range *e.Shape {
		if d < 0 {
			return Info{}, fmt.Errorf("tensor %q: negative dimension in shape %v", name, *e.Shape)
		}
		if d > 0 && bytes > math.MaxInt64/d {
			return Info{}, fmt.Errorf("tensor %q: shape %v overflows", name, *e.Shape)
		}
		bytes *= d
		shape[i] = int(d)
	}
	if end-begin != bytes {
		return Info{}, fmt.Errorf("tensor %q: %s%v needs %d bytes, data_offsets [%d, %d] hold %d",
			name, *e.DType, shape, bytes, begin, end, end-begin)
	}
	return Info{Name: name, DType: *e.DType, Shape: shape, Begin: begin, End: end}, nil
}

// ShapeString prints a shape as (a, b, c).
func ShapeString(shape []int) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

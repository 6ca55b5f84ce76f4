package steer

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tillerlm/tiller/llama/gguf"
)

// The GGUF control-vector format, as llama.cpp reads it (--control-vector) and repeng writes it,
// on the GGUF container that package gguf reads and writes:
//
//	general.architecture       string "controlvector"
//	controlvector.model_hint   string, the model_type it was made for ("llama")
//	controlvector.layer_count  u32 (repeng) or i32 (llama.cpp): the number of direction tensors
//	tensors: direction.N, F32, 1-D, hidden_size values, N >= 1
//
// BlockIndexing says how N maps onto tiller's hook points.
const BlockIndexing = "llama.cpp's block indexing: GGUF direction.N is added to the output of decoder block N (0-based), tiller's blocks.N.hook_resid_post (= blocks.N+1.hook_resid_pre); llama.cpp never steers block 0"

// isGGUF reports whether the file at path starts with GGUF's magic.
func isGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == "GGUF"
}

// GGUFLayer is the llama.cpp block index N whose output a vector at the given hook and layer
// steers, or an error when llama.cpp cannot express it.
func GGUFLayer(hook string, layer int) (int, error) {
	n := layer
	switch hook {
	case "hook_resid_post":
	case "hook_resid_pre":
		n = layer - 1 // the input of block L is the output of block L−1
	default:
		return 0, fmt.Errorf("a vector at %s cannot be written as a GGUF control vector: llama.cpp adds only to block outputs (hook_resid_post)", hook)
	}
	if n < 1 {
		return 0, fmt.Errorf("blocks.%d.%s is the output of block %d, which llama.cpp never steers (%s)", layer, hook, n, BlockIndexing)
	}
	return n, nil
}

// WriteGGUF writes the vector as a GGUF control vector with each layer's values multiplied by
// scale (llama.cpp adds them as they are, times its own --control-vector-scaled factor).
func WriteGGUF(path string, v *Vector, scale float32) error {
	if err := v.validate(path); err != nil {
		return err
	}
	hint := v.Info.ModelType
	if hint == "" {
		hint = "llama"
	}
	type dir struct {
		n      int
		values []float32
	}
	var dirs []dir
	for _, l := range v.Layers {
		n, err := GGUFLayer(v.Hook, l.Index)
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		vals := make([]float32, len(l.Values))
		for i, x := range l.Values {
			vals[i] = x * scale
		}
		dirs = append(dirs, dir{n, vals})
	}
	var b gguf.Builder
	b.Add("general.architecture", "controlvector")
	b.Add("controlvector.model_hint", hint)
	b.Add("controlvector.layer_count", uint32(len(dirs)))
	for _, d := range dirs {
		raw := make([]byte, 0, 4*len(d.values))
		for _, x := range d.values {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(x))
		}
		b.AddTensor("direction."+strconv.Itoa(d.n), []int{len(d.values)}, gguf.F32, raw)
	}
	return writeAtomic(path, b.Bytes())
}

// writeAtomic writes data to a temporary file beside path and renames it into place.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %v", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ReadGGUF reads and validates a GGUF control vector strictly: the magic and version (2 or 3),
// every metadata value well formed and no key twice, general.architecture "controlvector",
// controlvector.model_hint a string, controlvector.layer_count an i32 or u32 equal to the number
// of tensors, and only tensors direction.N (N >= 1, each once) that are F32, 1-D, all of one
// length, aligned and inside the file. The vector is at hook_resid_post of layer N (see
// BlockIndexing); its values are kept as stored, so strength 1 adds what llama.cpp adds at scale 1.
func ReadGGUF(path string) (*Vector, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v, err := ParseGGUF(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	v.Info.Source = "gguf: " + path
	if err := v.validate(path); err != nil {
		return nil, err
	}
	return v, nil
}

// maxDirection bounds a direction's length: far past any model's hidden size.
const maxDirection = 1 << 20

// ParseGGUF parses and validates a GGUF control vector held in memory (see ReadGGUF). The
// container (magic, version, metadata, tensor table, alignment, bounds) is package gguf's; this
// checks the control-vector rules on top.
func ParseGGUF(data []byte) (*Vector, error) {
	g, err := gguf.Parse(data)
	if err != nil {
		return nil, err
	}
	if arch, err := g.String("general.architecture"); err != nil || arch != "controlvector" {
		return nil, fmt.Errorf("general.architecture is %s, want the string \"controlvector\" (is this a model rather than a control vector?)", describe(g, "general.architecture"))
	}
	hint, err := g.String("controlvector.model_hint")
	if err != nil || hint == "" {
		return nil, fmt.Errorf("controlvector.model_hint is %s, want a non-empty string such as \"llama\"", describe(g, "controlvector.model_hint"))
	}
	var layerCount int64
	switch v := g.Meta["controlvector.layer_count"]; v.Type {
	case gguf.TypeUint32, gguf.TypeInt32:
		layerCount, _ = g.Int("controlvector.layer_count")
	default:
		return nil, fmt.Errorf("controlvector.layer_count is %s, want an i32 or u32", describe(g, "controlvector.layer_count"))
	}
	if len(g.Tensors) == 0 {
		return nil, fmt.Errorf("no direction tensors")
	}
	v := &Vector{Hook: "hook_resid_post", Info: Info{ModelType: hint, HiddenSize: g.Tensors[0].Dims[0]}}
	seen := map[int]bool{}
	for i := range g.Tensors {
		t := &g.Tensors[i]
		num, ok := strings.CutPrefix(t.Name, "direction.")
		n, err := strconv.Atoi(num)
		switch {
		case !ok || err != nil || num != strconv.Itoa(n):
			return nil, fmt.Errorf("tensor %q: a control vector holds only tensors named direction.N", t.Name)
		case n < 1:
			return nil, fmt.Errorf("tensor %s: layer %d; N must be >= 1 (%s)", t.Name, n, BlockIndexing)
		case seen[n]:
			return nil, fmt.Errorf("tensor %s appears twice", t.Name)
		case len(t.Dims) != 1:
			return nil, fmt.Errorf("tensor %s has %d dimensions, want 1 (hidden_size)", t.Name, len(t.Dims))
		case t.Type != gguf.F32:
			return nil, fmt.Errorf("tensor %s has type %s, want F32", t.Name, t.Type)
		case t.Dims[0] > maxDirection:
			return nil, fmt.Errorf("tensor %s has %d values", t.Name, t.Dims[0])
		case t.Dims[0] != v.Info.HiddenSize:
			return nil, fmt.Errorf("tensor %s has %d values, %s has %d: directions must share one length", t.Name, t.Dims[0], g.Tensors[0].Name, v.Info.HiddenSize)
		}
		seen[n] = true
		vals := make([]float32, t.Dims[0])
		if err := gguf.Dequantize(gguf.F32, g.Bytes(t), vals); err != nil {
			return nil, fmt.Errorf("tensor %s: %v", t.Name, err)
		}
		v.Layers = append(v.Layers, Layer{Index: n, Values: vals, TrainAcc: math.NaN(), HeldAcc: math.NaN()})
	}
	if layerCount != int64(len(v.Layers)) {
		return nil, fmt.Errorf("controlvector.layer_count is %d, but the file holds %d direction tensors", layerCount, len(v.Layers))
	}
	// Tensors whose bytes overlap are a corrupt table, whatever the container allows.
	byOffset := slices.Clone(g.Tensors)
	sort.Slice(byOffset, func(i, j int) bool { return byOffset[i].Offset < byOffset[j].Offset })
	for i := 1; i < len(byOffset); i++ {
		if prev := byOffset[i-1]; prev.Offset+prev.Size > byOffset[i].Offset {
			return nil, fmt.Errorf("tensors %s and %s overlap", prev.Name, byOffset[i].Name)
		}
	}
	sort.Slice(v.Layers, func(i, j int) bool { return v.Layers[i].Index < v.Layers[j].Index })
	return v, nil
}

// describe says what a metadata key holds, for an error message.
func describe(g *gguf.File, key string) string {
	v, ok := g.Meta[key]
	if !ok {
		return "missing"
	}
	return fmt.Sprintf("%s %s", v.Type, v.Format(8))
}

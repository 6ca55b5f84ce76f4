// Package steer derives steering vectors from contrastive text pairs, reads and writes them
// (tiller's safetensors layout and the GGUF control-vector format of llama.cpp and repeng), turns
// them into hook sets that steer a batch of sequences, each at its own strength, and scores what
// steered generations say: sentiment (VADER), emotion word rates from a lexicon, first-person
// pronoun rate, and fluency as perplexity under the unsteered model.
package steer

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

// Vector is a steering vector: a direction in the residual stream at one kind of hook point, for
// one or more layers.
type Vector struct {
	Hook   string  // the point within each layer, e.g. "hook_resid_post"
	Layers []Layer // ascending by Index
	Info   Info
}

// Layer is the vector's direction at one layer, with what derivation measured there.
type Layer struct {
	Index  int
	Values []float32 // (d_model): unit norm when tiller derived it; as stored when read from GGUF
	// MeanNorm is the mean L2 norm of the activation at this point over the tokens the
	// derivation reduced (each token's own norm, a leading BOS left out); 0 when unknown. A
	// --relative strength s adds s·MeanNorm·Values.
	MeanNorm float64
	Gap      float64 // mean over training pairs of (positive − negative) · Values
	TrainAcc float64 // fraction of training pairs whose positive projects higher; NaN: unknown
	HeldAcc  float64 // the same on held-out pairs (the sign test); NaN: none held out
}

// Info is where a vector came from.
type Info struct {
	Model      string // the model folder's base name
	ModelShape string // ModelShape of its config: what a vector must match to be used elsewhere
	ModelType  string // config.json's model_type ("llama"); GGUF's controlvector.model_hint
	HiddenSize int
	NumLayers  int    // the model's num_hidden_layers; 0 when unknown (GGUF)
	Method     string // "mean" or "pca"
	Positions  string // "last", "mean-response" or "all"
	Pairs      string // the pair file
	PairsSHA   string // its SHA-256, hex
	TrainPairs int
	HeldPairs  int
	FromEnd    []int  // locus positions (from the end of the prompt) when derived at a locus
	Source     string // "tiller derive", or "gguf: FILE" for an imported control vector
}

// FormatName is the value of the "format" metadata key of tiller's vector files.
const FormatName = "tiller-steering-vector/1"

// SteerableHooks are the points a vector can live at: those one d_model wide.
var SteerableHooks = []string{"hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"}

// ModelShape is a one-line fingerprint of the computation a config describes. Vectors carry it so
// that one derived on another architecture is refused even when the hidden sizes agree; models
// that differ only in weights (a base model and its instruct tune) share it.
func ModelShape(c *llama.Config) string {
	return fmt.Sprintf("%s hidden=%d layers=%d ffn=%d heads=%d/%d head_dim=%d vocab=%d",
		c.ModelType, c.Dim, c.Layers, c.FFNDim, c.Heads, c.KVHeads, c.HeadDim, c.Vocab)
}

// ModelInfo fills the model fields of an Info from the model's name (as the command line gave it) and
// its config.
func ModelInfo(name string, c *llama.Config) Info {
	return Info{Model: name, ModelShape: ModelShape(c), ModelType: c.ModelType, HiddenSize: c.Dim, NumLayers: c.Layers}
}

// PointName is the hook point of layer l: e.g. "blocks.3.hook_resid_post".
func (v *Vector) PointName(l int) string { return "blocks." + strconv.Itoa(l) + "." + v.Hook }

// Layer returns the direction at layer l.
func (v *Vector) Layer(l int) (*Layer, bool) {
	for i := range v.Layers {
		if v.Layers[i].Index == l {
			return &v.Layers[i], true
		}
	}
	return nil, false
}

// LayerIndices lists the layers the vector has, ascending.
func (v *Vector) LayerIndices() []int {
	out := make([]int, len(v.Layers))
	for i, l := range v.Layers {
		out[i] = l.Index
	}
	return out
}

// Check reports whether the vector can steer a model with this config: the same hidden size,
// its layers inside the model, and (unless otherOK) the same model shape or GGUF model hint.
// name is the vector's file, for the messages.
func (v *Vector) Check(name string, c *llama.Config, otherOK bool) error {
	for _, l := range v.Layers {
		if len(l.Values) != c.Dim {
			return fmt.Errorf("%s: the vector at layer %d has %d values, but the model's hidden_size is %d: it was made for another model", name, l.Index, len(l.Values), c.Dim)
		}
		if l.Index < 0 || l.Index >= c.Layers {
			return fmt.Errorf("%s: layer %d is out of range: the model has layers 0 to %d", name, l.Index, c.Layers-1)
		}
	}
	if otherOK {
		return nil
	}
	if v.Info.ModelShape != "" && v.Info.ModelShape != ModelShape(c) {
		return fmt.Errorf("%s: derived on %s (%s), but this model is %s; pass --other-model to use it anyway", name, v.Info.Model, v.Info.ModelShape, ModelShape(c))
	}
	if v.Info.ModelShape == "" && v.Info.ModelType != "" && v.Info.ModelType != c.ModelType {
		return fmt.Errorf("%s: made for model type %q, but this model is %q; pass --other-model to use it anyway", name, v.Info.ModelType, c.ModelType)
	}
	return nil
}

// validate checks what every vector must satisfy whatever the model.
func (v *Vector) validate(name string) error {
	if !slices.Contains(SteerableHooks, v.Hook) {
		return fmt.Errorf("%s: hook %q cannot be steered: want one of %s", name, v.Hook, strings.Join(SteerableHooks, ", "))
	}
	if len(v.Layers) == 0 {
		return fmt.Errorf("%s: the vector has no layers", name)
	}
	for i, l := range v.Layers {
		if i > 0 && l.Index <= v.Layers[i-1].Index {
			return fmt.Errorf("%s: layers out of order or repeated at %d", name, l.Index)
		}
		if len(l.Values) == 0 || len(l.Values) != len(v.Layers[0].Values) {
			return fmt.Errorf("%s: the vector at layer %d has %d values, at layer %d %d", name, l.Index, len(l.Values), v.Layers[0].Index, len(v.Layers[0].Values))
		}
		for k, x := range l.Values {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				return fmt.Errorf("%s: the vector at layer %d has %g at element %d", name, l.Index, x, k)
			}
		}
	}
	return nil
}

// Save writes the vector as safetensors: one F32 tensor of shape (d_model) per layer, named by its
// hook point ("blocks.L.hook_resid_post"), and the metadata keys listed in metadata.
func (v *Vector) Save(path string) error {
	if err := v.validate(path); err != nil {
		return err
	}
	names := make([]string, len(v.Layers))
	ts := make([]*tensor.Tensor, len(v.Layers))
	for i, l := range v.Layers {
		names[i] = v.PointName(l.Index)
		ts[i] = tensor.FromF32(l.Values, len(l.Values))
	}
	return safetensors.Save(path, names, ts, v.metadata())
}

// metadata is the safetensors metadata of the vector. Every value is a string (the format allows
// no other); per-layer measurements are JSON objects keyed by layer number.
//
//	format              "tiller-steering-vector/1"
//	hook                the point within each layer, e.g. "hook_resid_post"
//	model               the model folder's base name
//	model_shape         ModelShape of its config, e.g. "llama hidden=4096 layers=32 …"
//	model_type          config.json's model_type
//	hidden_size         d_model
//	num_hidden_layers   the model's layer count
//	method              "mean" (mean difference, ActAdd/CAA) or "pca" (first principal component)
//	positions           token positions reduced per text: "last", "mean-response" or "all"
//	pairs, pairs_sha256 the pair file and the SHA-256 of its bytes
//	pairs_train         pairs the vector was derived from
//	pairs_heldout       pairs held out for the sign test
//	mean_norm           {"L": mean L2 norm of the activation at layer L}
//	projection_gap      {"L": mean (positive − negative)·v over the training pairs}
//	train_accuracy      {"L": fraction of training pairs with positive·v > negative·v}
//	heldout_accuracy    {"L": the same over the held-out pairs}, absent when none were held out
//	positions_from_end  [k, …] locus positions when derived at a locus.json (0 = last prompt token)
//	source              "tiller derive" or "gguf: FILE"
func (v *Vector) metadata() map[string]string {
	in := v.Info
	m := map[string]string{
		"format":            FormatName,
		"hook":              v.Hook,
		"model":             in.Model,
		"model_shape":       in.ModelShape,
		"model_type":        in.ModelType,
		"hidden_size":       strconv.Itoa(len(v.Layers[0].Values)),
		"num_hidden_layers": strconv.Itoa(in.NumLayers),
		"method":            in.Method,
		"positions":         in.Positions,
		"pairs":             in.Pairs,
		"pairs_sha256":      in.PairsSHA,
		"pairs_train":       strconv.Itoa(in.TrainPairs),
		"pairs_heldout":     strconv.Itoa(in.HeldPairs),
		"source":            in.Source,
	}
	perLayer := func(key string, f func(Layer) float64) {
		obj := map[string]float64{}
		for _, l := range v.Layers {
			if x := f(l); !math.IsNaN(x) {
				obj[strconv.Itoa(l.Index)] = x
			}
		}
		if len(obj) > 0 {
			b, _ := json.Marshal(obj)
			m[key] = string(b)
		}
	}
	perLayer("mean_norm", func(l Layer) float64 {
		if l.MeanNorm == 0 {
			return math.NaN()
		}
		return l.MeanNorm
	})
	if in.TrainPairs > 0 {
		perLayer("projection_gap", func(l Layer) float64 { return l.Gap })
	}
	perLayer("train_accuracy", func(l Layer) float64 { return l.TrainAcc })
	perLayer("heldout_accuracy", func(l Layer) float64 { return l.HeldAcc })
	if in.FromEnd != nil {
		b, _ := json.Marshal(in.FromEnd)
		m["positions_from_end"] = string(b)
	}
	for k, s := range m {
		if s == "" || s == "0" && (k == "num_hidden_layers" || k == "pairs_train" || k == "pairs_heldout") {
			delete(m, k)
		}
	}
	return m
}

// Load reads a vector: a GGUF control vector when the file starts with the GGUF magic, else a
// safetensors file in tiller's layout. Safetensors files made by other tools load too when their
// tensors are 1-D F32 (or F64, BF16, F16) and named by hook point at one kind of point; metadata
// is then optional.
func Load(path string) (*Vector, error) {
	if isGGUF(path) {
		return ReadGGUF(path)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	meta := f.Header.Metadata
	if fm, ok := meta["format"]; ok && fm != FormatName {
		return nil, fmt.Errorf("%s: format %q, want %q", path, fm, FormatName)
	}
	v := &Vector{Hook: meta["hook"]}
	for _, name := range f.Names() {
		l, hook, ok := parsePointName(name)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %q is not named blocks.<layer>.<hook>", path, name)
		}
		if v.Hook == "" {
			v.Hook = hook
		}
		if hook != v.Hook {
			return nil, fmt.Errorf("%s: tensor %q is at %s, the vector's hook is %s", path, name, hook, v.Hook)
		}
		t, err := f.Tensor(name)
		if err != nil {
			return nil, err
		}
		if len(t.Shape) != 1 {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, want (hidden_size)", path, name, t.Shape)
		}
		switch t.DType {
		case tensor.F32, tensor.F64, tensor.BF16, tensor.F16:
		default:
			return nil, fmt.Errorf("%s: tensor %q is %s, want F32", path, name, t.DType)
		}
		v.Layers = append(v.Layers, Layer{Index: l, Values: t.ToF32(), TrainAcc: math.NaN(), HeldAcc: math.NaN()})
	}
	sort.Slice(v.Layers, func(i, j int) bool { return v.Layers[i].Index < v.Layers[j].Index })
	if err := v.readMetadata(path, meta); err != nil {
		return nil, err
	}
	if err := v.validate(path); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *Vector) readMetadata(path string, meta map[string]string) error {
	in := &v.Info
	in.Model, in.ModelShape, in.ModelType = meta["model"], meta["model_shape"], meta["model_type"]
	in.Method, in.Positions, in.Pairs, in.PairsSHA, in.Source = meta["method"], meta["positions"], meta["pairs"], meta["pairs_sha256"], meta["source"]
	ints := []struct {
		key string
		dst *int
	}{{"hidden_size", &in.HiddenSize}, {"num_hidden_layers", &in.NumLayers}, {"pairs_train", &in.TrainPairs}, {"pairs_heldout", &in.HeldPairs}}
	for _, k := range ints {
		if s, ok := meta[k.key]; ok {
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("%s: metadata %s = %q is not an integer", path, k.key, s)
			}
			*k.dst = n
		}
	}
	if in.HiddenSize != 0 && len(v.Layers) > 0 && in.HiddenSize != len(v.Layers[0].Values) {
		return fmt.Errorf("%s: metadata hidden_size %d, but the tensors have %d values", path, in.HiddenSize, len(v.Layers[0].Values))
	}
	perLayer := func(key string, set func(*Layer, float64)) error {
		s, ok := meta[key]
		if !ok {
			return nil
		}
		var obj map[string]float64
		if err := json.Unmarshal([]byte(s), &obj); err != nil {
			return fmt.Errorf("%s: metadata %s is not a JSON object of numbers by layer: %v", path, key, err)
		}
		for k, x := range obj {
			n, err := strconv.Atoi(k)
			if err != nil {
				return fmt.Errorf("%s: metadata %s has key %q, want a layer number", path, key, k)
			}
			l, ok := v.Layer(n)
			if !ok {
				return fmt.Errorf("%s: metadata %s names layer %d, which the file has no tensor for", path, key, n)
			}
			set(l, x)
		}
		return nil
	}
	for _, p := range []struct {
		key string
		set func(*Layer, float64)
	}{
		{"mean_norm", func(l *Layer, x float64) { l.MeanNorm = x }},
		{"projection_gap", func(l *Layer, x float64) { l.Gap = x }},
		{"train_accuracy", func(l *Layer, x float64) { l.TrainAcc = x }},
		{"heldout_accuracy", func(l *Layer, x float64) { l.HeldAcc = x }},
	} {
		if err := perLayer(p.key, p.set); err != nil {
			return err
		}
	}
	if s, ok := meta["positions_from_end"]; ok {
		if err := json.Unmarshal([]byte(s), &in.FromEnd); err != nil {
			return fmt.Errorf("%s: metadata positions_from_end is not a JSON list of integers: %v", path, err)
		}
	}
	return nil
}

// parsePointName splits "blocks.L.hook" into L and hook.
func parsePointName(name string) (int, string, bool) {
	rest, ok := strings.CutPrefix(name, "blocks.")
	if !ok {
		return 0, "", false
	}
	num, hook, ok := strings.Cut(rest, ".")
	l, err := strconv.Atoi(num)
	if !ok || err != nil || num != strconv.Itoa(l) || l < 0 {
		return 0, "", false
	}
	return l, hook, true
}

// ParseHook reads a --hook value: a point within a layer ("hook_resid_post") or a whole name
// ("blocks.12.hook_resid_post", which also gives the layer, returned; -1 otherwise).
func ParseHook(s string, layers int) (hook string, layer int, err error) {
	layer = -1
	if strings.HasPrefix(s, "blocks.") {
		p, err := hooks.Parse(s, layers)
		if err != nil {
			return "", 0, err
		}
		l, h, _ := parsePointName(p.Name())
		hook, layer = h, l
	} else {
		hook = s
	}
	if !slices.Contains(SteerableHooks, hook) {
		return "", 0, fmt.Errorf("hook %q cannot carry a steering vector: want one of %s (d_model wide)", s, strings.Join(SteerableHooks, ", "))
	}
	return hook, layer, nil
}

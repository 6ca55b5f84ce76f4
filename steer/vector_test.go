package steer

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

func testConfig(t *testing.T) *llama.Config {
	t.Helper()
	c, err := llama.ParseConfig(tinyConfig(0.3))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A vector saved and loaded is the same vector with the same measurements, and its file has the
// documented layout: F32 (d_model) tensors named by hook point, string metadata.
func TestVectorRoundTrip(t *testing.T) {
	c := testConfig(t)
	v := randomVector(c.Dim, 1, 0, 2)
	v.Layers[0].Gap, v.Layers[0].TrainAcc, v.Layers[0].HeldAcc = 0.25, 0.875, 0.75
	v.Layers[1].Gap, v.Layers[1].TrainAcc = 1.5, 1
	v.Info = ModelInfo("tiny", c)
	v.Info.Method, v.Info.Positions, v.Info.Pairs, v.Info.PairsSHA = "pca", "last", "joy.jsonl", Hash([]byte("x"))
	v.Info.TrainPairs, v.Info.HeldPairs, v.Info.FromEnd, v.Info.Source = 8, 2, []int{0, 3}, "tiller derive"
	path := filepath.Join(t.TempDir(), "v.safetensors")
	if err := v.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a, b := fmt.Sprintf("%+v", *v), fmt.Sprintf("%+v", *got) // NaN prints as NaN, so unknowns compare too
	if a != b {
		t.Errorf("round trip:\n got %s\nwant %s", b, a)
	}
	if !math.IsNaN(got.Layers[1].HeldAcc) {
		t.Errorf("no held-out accuracy at layer 2 should load as NaN, got %g", got.Layers[1].HeldAcc)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if names := strings.Join(f.Names(), ","); names != "blocks.0.hook_resid_post,blocks.2.hook_resid_post" {
		t.Errorf("tensors %s", names)
	}
	info, _ := f.Info("blocks.2.hook_resid_post")
	meta := f.Header.Metadata
	if info.DType != "F32" || len(info.Shape) != 1 || info.Shape[0] != 48 || meta["format"] != FormatName ||
		meta["model"] != "tiny" || meta["mean_norm"] != `{"0":3,"2":5}` || meta["heldout_accuracy"] != `{"0":0.75}` ||
		meta["positions_from_end"] != "[0,3]" || meta["hidden_size"] != "48" || meta["pairs_sha256"] != Hash([]byte("x")) {
		t.Errorf("layout: %+v, metadata %v", info, meta)
	}
}

// Bad vectors are refused with the reason: another hidden size, a layer the model lacks, another
// model's shape or type; and files that are not vectors.
func TestVectorCheck(t *testing.T) {
	c := testConfig(t)
	v := randomVector(c.Dim, 1, 1)
	v.Info = ModelInfo("m", c)
	if err := v.Check("v", c, false); err != nil {
		t.Fatal(err)
	}
	other := *c
	other.Dim = 64
	wide := randomVector(64, 1, 1)
	if err := wide.Check("wide", c, true); err == nil || !strings.Contains(err.Error(), "wide: the vector at layer 1 has 64 values, but the model's hidden_size is 48: it was made for another model") {
		t.Errorf("hidden size: %v", err)
	}
	deep := randomVector(c.Dim, 1, 5)
	if err := deep.Check("deep", c, false); err == nil || !strings.Contains(err.Error(), "layer 5 is out of range: the model has layers 0 to 2") {
		t.Errorf("layer: %v", err)
	}
	shaped := *c
	shaped.FFNDim = 96
	v.Info.ModelShape = ModelShape(&shaped)
	if err := v.Check("v", c, false); err == nil || !strings.Contains(err.Error(), "ffn=96") || !strings.Contains(err.Error(), "--other-model") {
		t.Errorf("model shape: %v", err)
	}
	if err := v.Check("v", c, true); err != nil {
		t.Errorf("--other-model: %v", err)
	}
	g := randomVector(c.Dim, 1, 1)
	g.Info.ModelType = "mistral" // a GGUF's model_hint
	if err := g.Check("g", c, false); err == nil || !strings.Contains(err.Error(), `made for model type "mistral"`) {
		t.Errorf("model hint: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, names []string, ts []*tensor.Tensor, meta map[string]string) string {
		p := filepath.Join(dir, name)
		if err := safetensors.Save(p, names, ts, meta); err != nil {
			t.Fatal(err)
		}
		return p
	}
	vec := tensor.FromF32(make([]float32, 8), 8)
	vec.F32()[0] = 1
	cases := []struct {
		path string
		want string
	}{
		{write("name.safetensors", []string{"direction.3"}, []*tensor.Tensor{vec}, nil), `tensor "direction.3" is not named blocks.<layer>.<hook>`},
		{write("2d.safetensors", []string{"blocks.1.hook_resid_post"}, []*tensor.Tensor{tensor.New(tensor.F32, 2, 4)}, nil), "has shape [2 4], want (hidden_size)"},
		{write("mixed.safetensors", []string{"blocks.1.hook_resid_post", "blocks.2.hook_resid_pre"}, []*tensor.Tensor{vec, vec}, nil), "the vector's hook is hook_resid_post"},
		{write("z.safetensors", []string{"blocks.1.attn.hook_z"}, []*tensor.Tensor{vec}, nil), `hook "attn.hook_z" cannot be steered`},
		{write("fmt.safetensors", []string{"blocks.1.hook_resid_post"}, []*tensor.Tensor{vec}, map[string]string{"format": "something-else"}), `format "something-else"`},
		{write("meta.safetensors", []string{"blocks.1.hook_resid_post"}, []*tensor.Tensor{vec}, map[string]string{"mean_norm": `{"4": 2}`}), "names layer 4, which the file has no tensor for"},
		{write("hs.safetensors", []string{"blocks.1.hook_resid_post"}, []*tensor.Tensor{vec}, map[string]string{"hidden_size": "9"}), "metadata hidden_size 9, but the tensors have 8 values"},
		{write("i32.safetensors", []string{"blocks.1.hook_resid_post"}, []*tensor.Tensor{tensor.New(tensor.I32, 8)}, nil), "is I32, want F32"},
		{filepath.Join(dir, "absent.safetensors"), "no such file"},
	}
	for _, c := range cases {
		if _, err := Load(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", filepath.Base(c.path), err, c.want)
		}
	}
	// A bare file from another tool (no metadata) loads.
	v, err := Load(write("bare.safetensors", []string{"blocks.3.hook_resid_pre"}, []*tensor.Tensor{vec}, nil))
	if err != nil || v.Hook != "hook_resid_pre" || v.Layers[0].Index != 3 {
		t.Errorf("bare file: %+v, %v", v, err)
	}
}

func TestParseHook(t *testing.T) {
	for _, c := range []struct {
		in    string
		hook  string
		layer int
		err   string
	}{
		{"hook_resid_post", "hook_resid_post", -1, ""},
		{"blocks.2.hook_mlp_out", "hook_mlp_out", 2, ""},
		{"blocks.7.hook_resid_post", "", 0, "layer 7 does not exist"},
		{"blocks.1.attn.hook_z", "", 0, "cannot carry a steering vector"},
		{"hook_embed", "", 0, "cannot carry"},
	} {
		h, l, err := ParseHook(c.in, 3)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || h != c.hook || l != c.layer {
			t.Errorf("%s: %s %d %v", c.in, h, l, err)
		}
	}
}

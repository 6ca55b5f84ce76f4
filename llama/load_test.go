package llama

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

// rewrite replaces the checkpoint's model.safetensors with the tensors keep returns.
func rewrite(t *testing.T, dir string, edit func(names []string, ts []*tensor.Tensor) ([]string, []*tensor.Tensor)) {
	t.Helper()
	path := filepath.Join(dir, "model.safetensors")
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var ts []*tensor.Tensor
	for _, n := range f.Names() {
		x, err := f.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		c := tensor.New(x.DType, x.Shape...)
		copy(c.Data, x.Data)
		names, ts = append(names, n), append(ts, c)
	}
	f.Close()
	names, ts = edit(names, ts)
	if err := safetensors.Save(path, names, ts, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	_, good := tinyModel(t, tensor.BF16, nil)
	copyDir := func(t *testing.T) string {
		t.Helper()
		dir := t.TempDir()
		for _, n := range []string{"config.json", "generation_config.json", "model.safetensors"} {
			b, err := os.ReadFile(filepath.Join(good, n))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, n), b, 0o644)
		}
		return dir
	}
	check := func(t *testing.T, dir string, want ...string) {
		t.Helper()
		_, err := Load(dir, LoadOptions{})
		if err == nil {
			t.Fatalf("loaded; want an error saying %q", want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	}
	t.Run("missing folder", func(t *testing.T) {
		check(t, filepath.Join(t.TempDir(), "nope"), "model folder", "nope")
	})
	t.Run("a file, not a folder", func(t *testing.T) {
		check(t, filepath.Join(good, "config.json"), "not a directory")
	})
	t.Run("no config", func(t *testing.T) {
		dir := copyDir(t)
		os.Remove(filepath.Join(dir, "config.json"))
		check(t, dir, "config.json")
	})
	t.Run("no weights", func(t *testing.T) {
		dir := copyDir(t)
		os.Remove(filepath.Join(dir, "model.safetensors"))
		check(t, dir, "neither model.safetensors nor model.safetensors.index.json")
	})
	t.Run("truncated weights", func(t *testing.T) {
		dir := copyDir(t)
		p := filepath.Join(dir, "model.safetensors")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, b[:len(b)-100], 0o644)
		check(t, dir, p, "run past the end", "truncated")
	})
	t.Run("missing tensor", func(t *testing.T) {
		dir := copyDir(t)
		rewrite(t, dir, func(n []string, ts []*tensor.Tensor) ([]string, []*tensor.Tensor) {
			for i := range n {
				if n[i] == "model.layers.1.mlp.up_proj.weight" {
					return append(n[:i:i], n[i+1:]...), append(ts[:i:i], ts[i+1:]...)
				}
			}
			t.Fatal("no up_proj in the checkpoint")
			return nil, nil
		})
		check(t, dir, `"model.layers.1.mlp.up_proj.weight"`, "(72, 48)")
	})
	t.Run("wrong shape", func(t *testing.T) {
		dir := copyDir(t)
		rewrite(t, dir, func(n []string, ts []*tensor.Tensor) ([]string, []*tensor.Tensor) {
			for i := range n {
				if n[i] == "model.layers.0.self_attn.k_proj.weight" {
					ts[i] = ts[i].Reshape(8, 96)
				}
			}
			return n, ts
		})
		check(t, dir, `"model.layers.0.self_attn.k_proj.weight" has shape (8, 96), the config implies (16, 48)`)
	})
	t.Run("integer weights", func(t *testing.T) {
		dir := copyDir(t)
		rewrite(t, dir, func(n []string, ts []*tensor.Tensor) ([]string, []*tensor.Tensor) {
			for i := range n {
				if n[i] == "model.norm.weight" {
					ts[i] = tensor.New(tensor.I32, 48)
				}
			}
			return n, ts
		})
		check(t, dir, `"model.norm.weight" has dtype I32`)
	})
	t.Run("config disagrees", func(t *testing.T) {
		dir := copyDir(t)
		os.WriteFile(filepath.Join(dir, "config.json"), tinyConfig(map[string]any{"num_hidden_layers": 3}), 0o644)
		check(t, dir, `"model.layers.2.input_layernorm.weight"`)
	})
	t.Run("malformed index", func(t *testing.T) {
		dir := copyDir(t)
		os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), []byte(`{"weight_map": [}`), 0o644)
		check(t, dir, "model.safetensors.index.json", "malformed JSON")
	})
	t.Run("index names a missing shard", func(t *testing.T) {
		dir := copyDir(t)
		idx, _ := json.Marshal(map[string]any{"weight_map": map[string]string{"model.norm.weight": "model-00002-of-00002.safetensors"}})
		os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644)
		check(t, dir, "model-00002-of-00002.safetensors")
	})
	t.Run("index escapes the folder", func(t *testing.T) {
		dir := copyDir(t)
		idx, _ := json.Marshal(map[string]any{"weight_map": map[string]string{"model.norm.weight": "../model.safetensors"}})
		os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644)
		check(t, dir, "not a file name in the folder")
	})
	t.Run("index lists a tensor its shard lacks", func(t *testing.T) {
		dir := copyDir(t)
		idx, _ := json.Marshal(map[string]any{"weight_map": map[string]string{"model.norm.weight": "model.safetensors", "extra.weight": "model.safetensors"}})
		os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644)
		check(t, dir, `tensor "extra.weight" in model.safetensors, which does not hold it`)
	})
}

func TestUnexpectedTensorsAreReported(t *testing.T) {
	_, dir := tinyModel(t, tensor.F32, nil)
	rewrite(t, dir, func(n []string, ts []*tensor.Tensor) ([]string, []*tensor.Tensor) {
		return append(n, "model.layers.0.self_attn.rotary_emb.inv_freq"), append(ts, tensor.New(tensor.F32, 4))
	})
	var log bytes.Buffer
	m, err := Load(dir, LoadOptions{Log: &log, Prefetch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !strings.Contains(log.String(), "rotary_emb.inv_freq") {
		t.Errorf("log %q does not report the unexpected tensor", log.String())
	}
}

func TestTiedEmbeddings(t *testing.T) {
	m, _ := tinyModel(t, tensor.BF16, map[string]any{"tie_word_embeddings": true})
	if m.LMHead != m.Embed {
		t.Error("tied model has its own LM head")
	}
	for _, w := range m.Weights() {
		if w.Name == "lm_head.weight" {
			t.Error("tied model expects lm_head.weight")
		}
	}
}

// WriteRandom keeps the fields it does not own, is deterministic in its seed, and writes the
// requested dtype.
func TestWriteRandom(t *testing.T) {
	dir1, dir2 := t.TempDir(), t.TempDir()
	cfg := tinyConfig(map[string]any{"custom_field": "kept"})
	for _, d := range []string{dir1, dir2} {
		if _, err := WriteRandom(cfg, nil, d, InitOptions{Layers: 1, Seed: 42, DType: tensor.F16}); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := os.ReadFile(filepath.Join(dir1, "model.safetensors"))
	b, _ := os.ReadFile(filepath.Join(dir2, "model.safetensors"))
	if !bytes.Equal(a, b) {
		t.Error("the same seed wrote different weights")
	}
	c, _ := os.ReadFile(filepath.Join(dir1, "config.json"))
	if !strings.Contains(string(c), `"custom_field": "kept"`) || !strings.Contains(string(c), `"num_hidden_layers": 1`) || !strings.Contains(string(c), `"torch_dtype": "float16"`) {
		t.Errorf("config.json:\n%s", c)
	}
	m, err := Load(dir1, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Layers[0].WQ.DType != tensor.F16 || m.Norm.ToF32()[3] != 1 {
		t.Errorf("weights: %v, norm %v", m.Layers[0].WQ, m.Norm.ToF32()[:4])
	}
	if _, err := WriteRandom(cfg, nil, t.TempDir(), InitOptions{DType: tensor.I32}); err == nil {
		t.Error("I32 weights accepted")
	}
	if _, err := WriteRandom([]byte("{"), nil, t.TempDir(), InitOptions{DType: tensor.BF16}); err == nil {
		t.Error("malformed config accepted")
	}
}

// A model loaded Resident (its weights copied into huge-page memory) computes the same logits,
// bit for bit, as the same folder mapped from the file.
func TestLoadResident(t *testing.T) {
	mapped, dir := tinyModel(t, tensor.BF16, nil)
	resident, err := Load(dir, LoadOptions{Resident: true})
	if err != nil {
		t.Fatal(err)
	}
	defer resident.Close()
	b := Prompt(0, prompt[:9], 0, true)
	var logits [2][]float32
	for i, m := range []*Model{mapped, resident} {
		r := newRunner(t, m, 2)
		out, err := r.Forward(b, r.NewKVCache(len(b.Tokens), 16), nil)
		if err != nil {
			t.Fatal(err)
		}
		logits[i] = append([]float32(nil), out.F32()...)
	}
	if maxAbs(logits[0]) == 0 {
		t.Fatal("zero logits; the test checks nothing")
	}
	for i := range logits[0] {
		if logits[0][i] != logits[1][i] {
			t.Fatalf("logit %d: %g resident, %g mapped", i, logits[1][i], logits[0][i])
		}
	}
}

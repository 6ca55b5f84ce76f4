package llama

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

// InitOptions control WriteRandom.
type InitOptions struct {
	Layers int          // override num_hidden_layers; 0 keeps the config's
	Seed   uint64       // the same seed writes the same weights
	DType  tensor.DType // weight dtype: F32, BF16 or F16
	Log    io.Writer    // progress; nil discards it
}

// WriteRandom writes a random-weight checkpoint in Hugging Face layout into dir: config.json (the
// given one, with num_hidden_layers and torch_dtype set), generation_config.json, and
// model.safetensors. Weights are drawn as transformers initialises a LLaMA: matrices from
// N(0, initializer_range²), norm weights 1, biases 0. Any real Llama config runs at its real
// shape this way without its weights. The tokenizer is the caller's to add.
func WriteRandom(configJSON []byte, generationJSON []byte, dir string, opts InitOptions) (*Config, error) {
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	switch opts.DType {
	case tensor.F32, tensor.BF16, tensor.F16:
	default:
		return nil, fmt.Errorf("weight dtype %s: want F32, BF16 or F16", opts.DType)
	}
	if opts.Layers < 0 {
		return nil, fmt.Errorf("layers %d, want > 0", opts.Layers)
	}
	out, cfg, err := RewriteConfig(configJSON, opts.Layers, opts.DType)
	if err != nil {
		return nil, err
	}
	if err := writeConfigs(dir, out, generationJSON, cfg); err != nil {
		return nil, err
	}

	m := &Model{Config: cfg}
	weights := m.Weights()
	infos := make([]safetensors.Info, len(weights))
	var total int64
	for i, w := range weights {
		infos[i] = safetensors.Info{Name: w.Name, DType: opts.DType.String(), Shape: w.Shape}
		total += int64(opts.DType.Size()) * int64(numel(w.Shape))
	}
	path := filepath.Join(dir, "model.safetensors")
	fw, err := safetensors.Create(path, infos, map[string]string{"format": "pt"})
	if err != nil {
		return nil, err
	}
	var done int64
	last := time.Now()
	for i, w := range weights {
		if err := writeRandomTensor(fw, w.Shape, opts.DType, initStd(w, cfg.InitStd), opts.Seed, uint64(i)); err != nil {
			fw.Close()
			return nil, err
		}
		done += int64(opts.DType.Size()) * int64(numel(w.Shape))
		if time.Since(last) > 500*time.Millisecond {
			fmt.Fprintf(logw, "\rwriting %s: %.1f / %.1f GB", path, float64(done)/1e9, float64(total)/1e9)
			last = time.Now()
		}
	}
	if total > 1<<28 {
		fmt.Fprintf(logw, "\rwrote %s: %.1f GB          \n", path, float64(total)/1e9)
	}
	if err := fw.Close(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// RewriteConfig returns config.json's bytes with num_hidden_layers set (when layers > 0) and
// torch_dtype naming dt, every other field kept as written, and the config they parse to.
func RewriteConfig(configJSON []byte, layers int, dt tensor.DType) ([]byte, *Config, error) {
	raw := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(configJSON))
	dec.UseNumber() // keep integers and floats exactly as written
	if err := dec.Decode(&raw); err != nil {
		return nil, nil, fmt.Errorf("malformed JSON: %v", err)
	}
	if layers > 0 {
		raw["num_hidden_layers"] = layers
	}
	raw["torch_dtype"] = map[tensor.DType]string{tensor.F32: "float32", tensor.BF16: "bfloat16", tensor.F16: "float16"}[dt]
	delete(raw, "dtype")
	out, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	cfg, err := ParseConfig(out)
	if err != nil {
		return nil, nil, err
	}
	return append(out, '\n'), cfg, nil
}

// writeConfigs writes config.json and generation_config.json (the given bytes, or the config's
// bos and eos ids when there are none) into dir, creating it.
func writeConfigs(dir string, configJSON, generationJSON []byte, cfg *Config) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), configJSON, 0o644); err != nil {
		return err
	}
	if generationJSON == nil {
		gen := map[string]any{"bos_token_id": cfg.BOS, "eos_token_id": cfg.EOS}
		if cfg.BOS < 0 {
			delete(gen, "bos_token_id")
		}
		generationJSON, _ = json.MarshalIndent(gen, "", "  ")
	}
	return os.WriteFile(filepath.Join(dir, "generation_config.json"), generationJSON, 0o644)
}

// Save writes the model as a Hugging Face checkpoint into dir: config.json (configJSON with
// torch_dtype set to dt), generation_config.json and model.safetensors with every weight
// converted to dt.
func (m *Model) Save(dir string, configJSON, generationJSON []byte, dt tensor.DType) error {
	out, cfg, err := RewriteConfig(configJSON, 0, dt)
	if err != nil {
		return err
	}
	if err := writeConfigs(dir, out, generationJSON, cfg); err != nil {
		return err
	}
	var names []string
	var ts []*tensor.Tensor
	for _, w := range m.Weights() {
		names, ts = append(names, w.Name), append(ts, (*w.Dst).Convert(dt))
	}
	return safetensors.Save(filepath.Join(dir, "model.safetensors"), names, ts, map[string]string{"format": "pt"})
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// writeRandomTensor writes one tensor: N(0, std²) when std > 0, ones when std < 0, zeros when 0.
// Values are drawn in chunks of their own seed, so the output does not depend on the number of
// threads.
func writeRandomTensor(w io.Writer, shape []int, dt tensor.DType, std float64, seed, index uint64) error {
	const chunk = 1 << 20
	n := numel(shape)
	threads := runtime.NumCPU()
	bufs := make([]*tensor.Tensor, threads)
	for lo := 0; lo < n; lo += chunk * threads {
		var wg sync.WaitGroup
		for t := 0; t < threads; t++ {
			start := lo + t*chunk
			if start >= n {
				bufs[t] = nil
				continue
			}
			size := min(chunk, n-start)
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(seed, index<<32|uint64(start/chunk)))
				v := make([]float32, size)
				for i := range v {
					switch {
					case std > 0:
						v[i] = float32(rng.NormFloat64() * std)
					case std < 0:
						v[i] = 1
					}
				}
				bufs[t] = tensor.FromF32(v, size).Convert(dt)
			}()
		}
		wg.Wait()
		for _, b := range bufs {
			if b == nil {
				continue
			}
			if _, err := w.Write(b.Data); err != nil {
				return err
			}
		}
	}
	return nil
}

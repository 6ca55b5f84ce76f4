package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/gguf"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/tensor"
)

// analysisBackend is a device backend that can run at analysis precision (gpu.Backend): every
// matrix product and attention in f32, so that activations and gradients match the CPU's.
type analysisBackend interface {
	SetAnalysis()
	FreeMemory() int64
}

// loaded is a model with its tokenizer and a runner on the CPU backend.
type loaded struct {
	model   *llama.Model
	tok     *tokenizer.Tokenizer
	backend *tensor.CPU
	runner  *llama.Runner
	release func() // gives the device back, when the runner is on one
}

func (l *loaded) Close() {
	if l.release != nil {
		l.release()
	}
	l.backend.Close()
	l.tok.Close()
	l.model.Close()
}

// prefetchAbove is the checkpoint size past which loading reads the weights in with progress,
// rather than leaving the first forward pass to stall on disk.
const prefetchAbove = 1 << 30

// open loads the model (a folder or a GGUF file) and its tokenizer, checking that they agree,
// for the CPU.
func open(mf modelFlags, stderr io.Writer) (*loaded, error) {
	return openFor(mf, true, stderr)
}

// openFor is open; cpu says the weights will be computed with where they are loaded, rather than
// copied to a device.
func openFor(mf modelFlags, cpu bool, stderr io.Writer) (*loaded, error) {
	m, err := loadModel(mf.dir, cpu, stderr)
	if err != nil {
		return nil, err
	}
	tok, err := loadTokenizer(mf.dir)
	if err != nil {
		m.Close()
		return nil, err
	}
	if tok.VocabSize() > m.Config.Vocab {
		tok.Close()
		m.Close()
		return nil, fmt.Errorf("%s has ids up to %d but the model's vocab_size is %d: tokenizer and model do not belong together",
			tok.Path(), tok.VocabSize()-1, m.Config.Vocab)
	}
	if id, ok := tok.EndOfTurn(); ok {
		m.TurnEnd = []int32{id}
	}
	b := tensor.NewCPU(mf.threads)
	return &loaded{model: m, tok: tok, backend: b, runner: llama.NewRunner(m, b)}, nil
}

// loadModel loads a Hugging Face folder, reading large checkpoints in with progress, or a GGUF
// file, dequantized. For the CPU (cpu) a folder's weights are copied into huge-page memory
// (llama.LoadOptions.Resident): decoding reads all of them for every token, faster from there.
func loadModel(path string, cpu bool, stderr io.Writer) (*llama.Model, error) {
	if llama.IsGGUF(path) {
		return llama.LoadGGUF(path, llama.LoadOptions{Log: stderr})
	}
	cfg, err := llama.ReadConfig(path)
	if err != nil {
		return nil, err
	}
	return llama.Load(path, llama.LoadOptions{Log: stderr, Prefetch: cfg.Params()*2 > prefetchAbove, Resident: cpu})
}

// loadTokenizer loads a folder's tokenizer.json and tokenizer_config.json, or rebuilds a GGUF
// file's tokenizer from its metadata.
func loadTokenizer(path string) (*tokenizer.Tokenizer, error) {
	if !llama.IsGGUF(path) {
		return tokenizer.Load(path)
	}
	g, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	return tokenizer.FromGGUF(g)
}

// readConfig reads a folder's config.json or a GGUF file's llama.* metadata.
func readConfig(path string) (*llama.Config, error) {
	if !llama.IsGGUF(path) {
		return llama.ReadConfig(path)
	}
	g, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	c, _, err := llama.GGUFConfig(g)
	return c, err
}

// encode turns the prompt into ids: as one user turn of the chat template (after an optional
// system turn) with the assistant's turn opened, or as plain text with the tokenizer's BOS.
func (l *loaded) encode(prompt string, asChat bool, system string, generationPrompt bool) ([]int32, error) {
	if !asChat {
		if system != "" {
			return nil, usagef("--system needs --chat")
		}
		return l.tok.Encode(prompt, true)
	}
	var msgs []chat.Message
	if system != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: system})
	}
	msgs = append(msgs, chat.Message{Role: "user", Content: prompt})
	return l.tok.EncodeChat(msgs, generationPrompt)
}

// deviceFlag registers --device on a command that can run on a GPU.
func deviceFlag(fs *flag.FlagSet) *string {
	return fs.String("device", "cpu", "where the model runs: cpu, or cuda (GPU 0; needs a CUDA build, `make tiller-cuda`)")
}

// openAnalysis opens the model for reading activations and gradients: on the CPU a runner with
// activations of dtype dt; on the GPU (--device cuda, F32 only) its runner at analysis precision;
// either batch-invariant when deterministic (--deterministic).
func openAnalysis(mf modelFlags, device string, dt tensor.DType, deterministic bool, stderr io.Writer) (*loaded, *llama.Runner, error) {
	if device == "cuda" && dt != tensor.F32 {
		return nil, nil, usagef("--dtype f64 runs on the CPU only (the GPU computes gradients in f32 at full precision)")
	}
	l, err := openOn(mf, device, stderr)
	if err != nil {
		return nil, nil, err
	}
	r := l.runner
	if device != "cuda" {
		r = llama.NewRunnerOf(l.model, l.backend, dt)
	} else if a, ok := r.Backend.(analysisBackend); ok {
		a.SetAnalysis()
	}
	r.SetDeterministic(deterministic)
	return l, r, nil
}

// fitsDevice checks, for a runner on a device, that a recorded forward and backward pass over
// tokens (sequences of them, with rows logit rows) fits in its free memory, and otherwise gives
// the estimate.
func fitsDevice(r *llama.Runner, tokens, sequences, rows int) error {
	a, ok := r.Backend.(analysisBackend)
	if !ok {
		return nil
	}
	c := r.Model.Config
	need, free := c.AnalysisBytes(tokens, sequences)+int64(8*rows*c.Vocab), a.FreeMemory()
	if need > free {
		return fmt.Errorf("a recorded forward and backward pass of %d tokens needs about %.2f GB of device memory beyond the weights (%.1f MB per token), and the device has %.2f GB free: shorten the prompt",
			tokens, float64(need)/1e9, float64(c.AnalysisBytes(1, 0))/1e6, float64(free)/1e9)
	}
	return nil
}

func checkDevice(device string) error {
	if device != "cpu" && device != "cuda" {
		return usagef("--device %q: want cpu or cuda", device)
	}
	return nil
}

// openOn opens the model as open does and moves its runner to the device --device names (cuda:
// GPU 0, whose backend keeps its own copy of the weights); Close gives the device back.
func openOn(mf modelFlags, device string, stderr io.Writer) (*loaded, error) {
	l, err := openFor(mf, device != "cuda", stderr)
	if err != nil || device != "cuda" {
		return l, err
	}
	r, closeGPU, err := cudaRunner(l.model)
	if err != nil {
		l.Close()
		return nil, err
	}
	l.runner, l.release = r, closeGPU
	return l, nil
}

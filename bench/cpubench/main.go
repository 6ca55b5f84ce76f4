// Command cpubench times tiller on the CPU the way bench/peers/cpu_compare.py times its peers:
// prefill of a prompt of P tokens, then greedy decode of G tokens, each timed on its own, and
// prints one JSON line per (prompt length, repetition).
//
//	go run ./bench/cpubench --model DIR|FILE.gguf [--prompt 32,512] [--decode 64] [--reps 1] [--threads 2]
//
// The prompt is fixed pseudo-random token ids (the same formula in every engine's script), so
// every engine runs the same number of tokens whatever its tokenizer. Prefill is one forward pass
// over the whole prompt (logits of its last token only); a decode step is one forward pass of one
// token and its greedy pick, counted from the first token after the prompt, so the decode rate is
// steps / time. bench/peers/cpu_compare.py runs it beside the peers and records the machine's
// background load around each run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tillerlm/tiller/bench"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cpubench:", err)
		os.Exit(1)
	}
}

// result is one JSON line: the field names are shared with bench/peers/hf_cpu.py.
type result struct {
	Engine       string  `json:"engine"`
	Mode         string  `json:"mode"` // f32 (exact), or the precision options in use
	Model        string  `json:"model"`
	Threads      int     `json:"threads"`
	Prompt       int     `json:"prompt"`
	Rep          int     `json:"rep"`
	PrefillS     float64 `json:"prefill_s"`
	PrefillTokS  float64 `json:"prefill_tok_s"`
	Decode       int     `json:"decode"`
	DecodeS      float64 `json:"decode_s"`
	DecodeTokS   float64 `json:"decode_tok_s"`
	FirstTokenID int32   `json:"first_token_id"` // the greedy pick after the prompt: engines should agree
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("cpubench", flag.ContinueOnError)
	dir := fs.String("model", os.Getenv("TILLER_BENCH_MODEL"), "model folder in Hugging Face layout or a GGUF file (default $TILLER_BENCH_MODEL)")
	prompts := fs.String("prompt", "32,512", "comma-separated prompt lengths in tokens")
	decode := fs.Int("decode", 64, "greedy decode steps after each prompt")
	reps := fs.Int("reps", 1, "repetitions of each prompt length")
	threads := fs.Int("threads", 2, "CPU threads")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the timed passes to this file")
	kvCache := fs.String("kv-cache", "f32", "KV cache dtype: f32 (exact) or bf16")
	compute := fs.String("compute", "f32", "arithmetic of the GEMM: f32 (exact) or bf16")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("--model (or TILLER_BENCH_MODEL) is required")
	}
	var lengths []int
	for _, f := range strings.Split(*prompts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("--prompt %q: want positive numbers", *prompts)
		}
		lengths = append(lengths, n)
	}
	if *decode < 0 || *reps < 1 || *threads < 1 {
		return fmt.Errorf("--decode must be >= 0, --reps and --threads >= 1")
	}
	var prec llama.Precision
	var modes []string
	switch *kvCache {
	case "f32":
	case "bf16":
		prec.KVBF16, modes = true, append(modes, "kv-bf16")
	default:
		return fmt.Errorf("--kv-cache %q: want f32 or bf16", *kvCache)
	}
	switch *compute {
	case "f32":
	case "bf16":
		prec.ComputeBF16, modes = true, append(modes, "compute-bf16")
	default:
		return fmt.Errorf("--compute %q: want f32 or bf16", *compute)
	}
	mode := "f32"
	if len(modes) > 0 {
		mode = strings.Join(modes, "+")
	}
	var m *llama.Model
	var err error
	if llama.IsGGUF(*dir) {
		m, err = llama.LoadGGUF(*dir, llama.LoadOptions{})
	} else {
		m, err = llama.Load(*dir, llama.LoadOptions{Resident: true})
	}
	if err != nil {
		return err
	}
	defer m.Close()
	be := tensor.NewCPU(*threads)
	defer be.Close()
	r := llama.NewRunner(m, be)
	if err := r.SetPrecision(prec); err != nil {
		return err
	}

	// An untimed pass first: page faults of the activations, the kernels' scratch buffers.
	if _, err := pass(r, promptIDs(8, m.Config.Vocab), 2); err != nil {
		return err
	}
	stop, err := bench.StartCPUProfile(*profile)
	if err != nil {
		return err
	}
	defer stop()
	enc := json.NewEncoder(stdout)
	for rep := 1; rep <= *reps; rep++ {
		for _, n := range lengths {
			t, err := pass(r, promptIDs(n, m.Config.Vocab), *decode)
			if err != nil {
				return err
			}
			res := result{
				Engine: "tiller", Mode: mode, Model: *dir, Threads: *threads, Prompt: n, Rep: rep,
				PrefillS: t.prefill.Seconds(), PrefillTokS: float64(n) / t.prefill.Seconds(),
				Decode: *decode, DecodeS: t.decode.Seconds(), FirstTokenID: t.first,
			}
			if *decode > 0 {
				res.DecodeTokS = float64(*decode) / t.decode.Seconds()
			}
			if err := enc.Encode(res); err != nil {
				return err
			}
		}
	}
	return nil
}

// promptIDs is the benchmark prompt of n tokens: (i·7919 + 13) mod vocab, as in the peers' scripts.
func promptIDs(n, vocab int) []int32 {
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32((i*7919 + 13) % vocab)
	}
	return ids
}

type timings struct {
	prefill, decode time.Duration
	first           int32
}

// pass prefills ids into a fresh cache and decodes steps greedy tokens after them.
func pass(r *llama.Runner, ids []int32, steps int) (timings, error) {
	var t timings
	kv := r.NewKVCache(len(ids)+steps, 16)
	greedy := llama.NewSampler(llama.SamplerConfig{}, r.Model.Config.Vocab)
	start := time.Now()
	logits, err := r.Forward(llama.Prompt(0, ids, 0, false), kv, nil)
	if err != nil {
		return t, err
	}
	t.prefill = time.Since(start)
	step := llama.Batch{Tokens: []int32{0}, Seq: []int32{0}, Pos: []int32{0}, Logits: []bool{true}}
	t.first = greedy.Sample(logits.F32(), nil)
	step.Tokens[0] = t.first
	start = time.Now()
	for i := range steps {
		step.Pos[0] = int32(len(ids) + i)
		if logits, err = r.Forward(step, kv, nil); err != nil {
			return t, err
		}
		step.Tokens[0] = greedy.Sample(logits.F32(), nil)
	}
	t.decode = time.Since(start)
	return t, nil
}

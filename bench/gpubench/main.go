//go:build cuda

// Command gpubench measures tiller's GPU backend on the card it runs on, against that card's own
// device-to-device copy bandwidth measured in the same run: each GEMV at the Llama-3.1-8B shapes
// (row-per-warp and split-K kernels, timed inside CUDA graphs so that host launch costs stay
// out), the prefill GEMMs and attention, batch-1 greedy decode of the full 32-layer model with
// random bf16 weights made on the device (generic step, fused step, fused step with programmatic
// dependent launch; one CUDA graph per step), a per-kernel profile of each decode step, and a
// 2048-token prefill. It writes one JSON line per figure to -out and prints them.
//
//	gpubench -config llama-3.1-8b-config.json -out results.jsonl
//
// With -hf DIR it instead compares the logits of the checkpoint in DIR (written by hf_logits.py,
// with HF transformers' own logits in DIR/reference.safetensors) on the GPU: prefill, runner
// decode, and the device-resident decoder in both forms (hfcheck.go). With -grads DIR and
// -attrib DIR it compares the gradients at every hook point and the AtP scores of the checkpoint
// in DIR with PyTorch autograd's (hf_attrib.py's DIR/attrib_reference.safetensors) and with the
// CPU's; -atp-bench times AtP at the -config shape (attrib.go).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/tillerlm/tiller/gpu"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

var (
	configPath   = flag.String("config", "build/device/llama-3.1-8b-config.json", "the model's config.json")
	outPath      = flag.String("out", "", "append JSON lines here")
	steps        = flag.Int("steps", 128, "decode steps to time")
	prefillN     = flag.Int("prefill", 2048, "prefill tokens to time")
	batchRows    = flag.Int("rows", 64, "rows of the batched (runner) generation, plain and steered; 0 skips it")
	batchNew     = flag.Int("batch-new", 32, "tokens each row of the batched generation generates")
	cpuProfile   = flag.String("cpuprofile", "", "write a CPU profile of the batched generation's timed runs here")
	profileSteps = flag.Int("profile-steps", 4, "decode steps of the per-kernel profile")
	skipModel    = flag.Bool("kernels-only", false, "skip the whole-model decode and prefill")
	hfDir        = flag.String("hf", "", "compare the logits of the checkpoint in this folder with HF transformers' (reference.safetensors) and exit")
	gradsDir     = flag.String("grads", "", "compare the gradients of the checkpoint in this folder with PyTorch's (attrib_reference.safetensors) and the CPU's, and exit")
	attribDir    = flag.String("attrib", "", "compare AtP on the checkpoint in this folder with PyTorch's and the CPU's, and exit")
	cpuPairs     = flag.Int("cpu-pairs", 2, "with -attrib: pairs the CPU path also runs (0: none)")
	verifyNodes  = flag.Int("verify", 64, "with -attrib: nodes exact patching checks on the GPU and the CPU (0: none)")
	atpBenchFlag = flag.Bool("atp-bench", false, "time AtP at the -config shape with random weights, and exit")
	atpPairs     = flag.Int("atp-pairs", 40, "with -atp-bench: pairs")
	atpTokens    = flag.Int("atp-tokens", 64, "with -atp-bench: tokens per prompt")
)

var copyPeak float64 // GB/s, measured first

func emit(row map[string]any) {
	b, _ := json.Marshal(row)
	fmt.Println(string(b))
	if *outPath != "" {
		f, err := os.OpenFile(*outPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.Write(append(b, '\n'))
			f.Close()
		}
	}
}

var failures int

func fail(what string, err error) {
	failures++
	emit(map[string]any{"what": "failed", "step": what, "error": err.Error()})
}

// guarded runs one measurement, turning a panic (a driver error inside an op) into a failure
// row so that the remaining measurements still run.
func guarded(what string, fn func() error) {
	defer func() {
		if r := recover(); r != nil {
			fail(what, fmt.Errorf("panic: %v", r))
		}
	}()
	if err := fn(); err != nil {
		fail(what, err)
	}
}

func main() {
	flag.Parse()
	b, err := gpu.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpubench:", err)
		os.Exit(1)
	}
	defer b.Close()
	emit(map[string]any{"what": "device", "name": b.Name(), "sms": b.SMs(), "cc": b.ComputeCapability()})

	if *hfDir != "" || *gradsDir != "" || *attribDir != "" {
		if *hfDir != "" {
			guarded("hf logits", func() error { return hfCheck(b, *hfDir) })
		}
		if *gradsDir != "" {
			guarded("gradients", func() error { return gradCheck(b, *gradsDir) })
		}
		if *attribDir != "" {
			guarded("attribution", func() error { return attribCheck(b, *attribDir, *cpuPairs, *verifyNodes) })
		}
		emit(map[string]any{"what": "done", "failures": failures})
		if failures > 0 {
			os.Exit(1)
		}
		return
	}

	guarded("copy", func() error {
		gbps, ms, err := b.CopyBandwidth(2<<30, 20)
		if err != nil {
			return err
		}
		copyPeak = gbps
		emit(map[string]any{"what": "device_copy", "bytes_moved": 2 * (2 << 30), "ms": ms, "gbps": gbps})
		return nil
	})
	raw, err := os.ReadFile(*configPath)
	if err != nil {
		fail("config", err)
		os.Exit(1)
	}
	cfg, err := llama.ParseConfig(raw)
	if err != nil {
		fail("config", err)
		os.Exit(1)
	}
	if *atpBenchFlag {
		guarded("atp bench", func() error { return atpBench(b, cfg, *atpPairs, *atpTokens) })
		emit(map[string]any{"what": "done", "failures": failures})
		if failures > 0 {
			os.Exit(1)
		}
		return
	}
	guarded("kernels", func() error { return kernels(b, cfg) })
	if !*skipModel {
		guarded("model", func() error { return model(b, cfg) })
	}
	emit(map[string]any{"what": "done", "failures": failures})
	if failures > 0 {
		os.Exit(1)
	}
}

// bandwidthRow reports a memory-bound kernel: bytes it must move, its time, and GB/s against the
// copy peak.
func bandwidthRow(name, shape string, bytes float64, ms float64) {
	gbps := bytes / (ms * 1e-3) / 1e9
	row := map[string]any{"what": "kernel", "kernel": name, "shape": shape, "ms": ms, "bytes": bytes, "gbps": gbps}
	if copyPeak > 0 {
		row["frac_copy"] = gbps / copyPeak
	}
	emit(row)
}

func flopRow(name, shape string, flops float64, ms float64) {
	emit(map[string]any{"what": "kernel", "kernel": name, "shape": shape, "ms": ms, "tflops": flops / (ms * 1e-3) / 1e12})
}

func randomT(b *gpu.Backend, seed uint64, scale float32, dt tensor.DType, shape ...int) *tensor.Tensor {
	t := b.Alloc(dt, shape...)
	b.Random(t, seed, scale)
	return t
}

// timeGraph captures reps calls of fn (fn(i) for i < reps) into one CUDA graph and returns the
// median time of one call in milliseconds over several replays: the kernel back to back with
// itself, as in a decode step's graph, without the host's launch cost. fn must not stage host
// arrays (MatMul and the fused products do not).
func timeGraph(b *gpu.Backend, reps int, fn func(i int)) (float64, error) {
	fn(0) // load the modules outside the capture
	g, err := b.Capture(func() {
		for i := 0; i < reps; i++ {
			fn(i)
		}
	})
	if err != nil {
		return 0, err
	}
	defer g.Close()
	var launchErr error
	ms, err := b.Time(2, 5, func() {
		if err := g.Launch(); err != nil && launchErr == nil {
			launchErr = err
		}
	})
	if err == nil {
		err = launchErr
	}
	return ms / float64(reps), err
}

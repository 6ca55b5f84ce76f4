package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/tensor"
)

// example is one line of a training data file: a conversation as chat messages, or raw text.
// held_out lines are kept out of training and measure the held-out loss.
type example struct {
	Messages []chat.Message `json:"messages"`
	Text     *string        `json:"text"`
	HeldOut  bool           `json:"held_out"`
}

func runTrain(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", "--config FILE --tokenizer FILE --data FILE --out DIR [--steps N] [--batch B] [--lr LR] [--seed S]", stderr)
	configPath := fs.String("config", "", "model config.json (LLaMA architecture) to train from scratch")
	tokPath := fs.String("tokenizer", "", "tokenizer.json (a tokenizer_config.json beside it is used and copied)")
	dataPath := fs.String("data", "", `JSONL, one example per line: {"messages": [{"role", "content"}, …]} or {"text": "…"}, with "held_out": true for held-out lines`)
	out := fs.String("out", "", "folder for the checkpoint (Hugging Face layout, bf16), loss.csv and loss.png")
	steps := fs.Int("steps", 2000, "optimiser steps")
	batch := fs.Int("batch", 16, "sequences per step")
	seqLen := fs.Int("seq-len", 128, "longest sequence; longer examples are cut")
	lr := fs.Float64("lr", 3e-3, "peak learning rate (AdamW, linear warmup, cosine decay to a tenth)")
	warmup := fs.Int("warmup", 100, "warmup steps")
	seed := fs.Uint64("seed", 1, "seed of the initial weights and of batch sampling")
	evalEvery := fs.Int("eval-every", 200, "steps between held-out evaluations")
	threads := fs.Int("threads", physicalCores(), "CPU threads (default: the physical cores this process may use)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *configPath == "" || *tokPath == "" || *dataPath == "" || *out == "":
		return usagef("--config, --tokenizer, --data and --out are required")
	case len(pos) > 0:
		return usagef("unexpected argument %q", pos[0])
	case *steps < 1 || *batch < 1 || *seqLen < 2 || *warmup < 0 || *evalEvery < 0 || *threads < 1:
		return usagef("--steps, --batch and --threads must be >= 1, --seq-len >= 2, --warmup and --eval-every >= 0")
	case !(*lr > 0) || math.IsInf(*lr, 0):
		return usagef("--lr %g, want > 0", *lr)
	}
	if _, err := os.Stat(filepath.Join(*out, "model.safetensors")); err == nil {
		return fmt.Errorf("%s already holds a model.safetensors; choose an empty folder (nothing was written)", *out)
	}
	cfgJSON, err := os.ReadFile(*configPath)
	if err != nil {
		return err
	}
	cfg, err := llama.ParseConfig(cfgJSON)
	if err != nil {
		return fmt.Errorf("%s: %v", *configPath, err)
	}
	tok, err := tokenizer.FromFile(*tokPath)
	if err != nil {
		return err
	}
	defer tok.Close()
	tokCfg, err := os.ReadFile(filepath.Join(filepath.Dir(*tokPath), "tokenizer_config.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if tokCfg != nil {
		// Load again from the folder so the chat style and special tokens of tokenizer_config.json apply.
		tok.Close()
		if tok, err = tokenizer.Load(filepath.Dir(*tokPath)); err != nil {
			return err
		}
	}
	if tok.VocabSize() > cfg.Vocab {
		return fmt.Errorf("%s has ids up to %d but the config's vocab_size is %d", *tokPath, tok.VocabSize()-1, cfg.Vocab)
	}
	train, held, err := readExamples(*dataPath, tok)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "data: %d training and %d held-out examples from %s\n", len(train), len(held), *dataPath)
	if len(held) > heldOutEval {
		held = held[:heldOutEval] // enough for a stable estimate, without stalling training
		fmt.Fprintf(stderr, "held-out loss is measured on the first %d held-out examples\n", heldOutEval)
	}

	m, err := llama.NewRandom(cfg, *seed)
	if err != nil {
		return err
	}
	be := tensor.NewCPU(*threads)
	defer be.Close()
	r := llama.NewRunner(m, be)
	fmt.Fprintf(stderr, "model: %s parameters, %d layers, hidden %d; %d steps of %d sequences\n", count(cfg.Params()), cfg.Layers, cfg.Dim, *steps, *batch)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	curve, err := os.Create(filepath.Join(*out, "loss.csv"))
	if err != nil {
		return err
	}
	defer curve.Close()
	fmt.Fprintln(curve, "step,loss,held_out_loss,lr,grad_norm,tokens_per_s,elapsed_s")
	var points []lossPoint
	err = llama.Train(r, train, held, llama.TrainOptions{
		Steps: *steps, Batch: *batch, SeqLen: *seqLen, LR: *lr, Warmup: *warmup, Seed: *seed, EvalEvery: *evalEvery, Log: stderr,
		OnStep: func(s llama.TrainStep) error {
			held := ""
			if !math.IsNaN(s.HeldOut) {
				held = fmt.Sprintf("%.5f", s.HeldOut)
			}
			points = append(points, lossPoint{s.Step + 1, s.Loss, s.HeldOut})
			_, err := fmt.Fprintf(curve, "%d,%.5f,%s,%.6g,%.4f,%.0f,%.1f\n", s.Step+1, s.Loss, held, s.LR, s.GradNorm, s.TokensPerS, s.ElapsedSecs)
			return err
		},
	})
	if err != nil {
		return err
	}
	genJSON, err := os.ReadFile(filepath.Join(filepath.Dir(*configPath), "generation_config.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := r.Model.Save(*out, cfgJSON, genJSON, tensor.BF16); err != nil {
		return err
	}
	for name, data := range map[string][]byte{"tokenizer_config.json": tokCfg} {
		if data != nil {
			if err := os.WriteFile(filepath.Join(*out, name), data, 0o644); err != nil {
				return err
			}
		}
	}
	tj, err := os.ReadFile(*tokPath)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "tokenizer.json"), tj, 0o644); err != nil {
		return err
	}
	if err := plotLoss(filepath.Join(*out, "loss.png"), points); err != nil {
		return err
	}
	last := points[len(points)-1]
	fmt.Fprintf(stdout, "wrote %s: final training loss %.4f, held-out loss %.4f; loss curve in loss.csv and loss.png\n", *out, last.train, last.held)
	return nil
}

// heldOutEval is the most held-out examples each evaluation runs.
const heldOutEval = 512

// readExamples tokenizes a JSONL data file, splitting off the held-out lines.
func readExamples(path string, tok *tokenizer.Tokenizer) (train, held [][]int32, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e example
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		var ids []int32
		switch {
		case e.Messages != nil && e.Text == nil:
			ids, err = tok.EncodeChat(e.Messages, false)
		case e.Text != nil && e.Messages == nil:
			ids, err = tok.Encode(*e.Text, true)
		default:
			err = fmt.Errorf(`want exactly one of "messages" and "text"`)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		if e.HeldOut {
			held = append(held, ids)
		} else {
			train = append(train, ids)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(train) == 0 {
		return nil, nil, fmt.Errorf("%s: no training examples", path)
	}
	return train, held, nil
}

package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/tillerlm/tiller/llama"
)

// samplerFlags are the sampling flags; a flag left unset takes the model's generation_config.json
// value when it asks for sampling, and greedy decoding otherwise, as transformers does.
type samplerFlags struct {
	fs                *flag.FlagSet
	temperature, topP float64
	minP, repetition  float64
	topK              int
	seed              uint64
}

func (s *samplerFlags) register(fs *flag.FlagSet) {
	s.fs = fs
	fs.Float64Var(&s.temperature, "temperature", 0, "sampling temperature; 0 is greedy (default: the model's generation_config.json, else 0)")
	fs.Float64Var(&s.topP, "top-p", 1, "nucleus sampling: keep the most likely tokens up to this total probability (default: generation_config.json, else 1 = off)")
	fs.IntVar(&s.topK, "top-k", 0, "keep only the k most likely tokens (default: generation_config.json, else 50 when sampling, as transformers)")
	fs.Float64Var(&s.minP, "min-p", 0, "drop tokens less likely than this fraction of the most likely one; 0 is off")
	fs.Float64Var(&s.repetition, "repetition-penalty", 1, "divide the logits of tokens already in the context by this (CTRL); 1 is off")
	fs.Uint64Var(&s.seed, "seed", 0, "random seed: the same seed gives the same text (default: a random seed, printed)")
}

func (s *samplerFlags) config(gen *llama.GenerationConfig) (llama.SamplerConfig, error) {
	set := map[string]bool{}
	s.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c := llama.SamplerConfig{TopP: float32(s.topP), TopK: s.topK, MinP: float32(s.minP), RepetitionPenalty: float32(s.repetition), Seed: s.seed}
	sampling := gen.DoSample != nil && *gen.DoSample
	if set["temperature"] {
		c.Temperature = float32(s.temperature)
	} else if sampling {
		c.Temperature = 1
		if gen.Temperature != nil {
			c.Temperature = float32(*gen.Temperature)
		}
	}
	if !set["top-p"] && sampling && gen.TopP != nil {
		c.TopP = float32(*gen.TopP)
	}
	if !set["top-k"] && c.Temperature > 0 {
		c.TopK = 50
		if gen.TopK != nil {
			c.TopK = *gen.TopK
		}
	}
	if !set["min-p"] && sampling && gen.MinP != nil {
		c.MinP = float32(*gen.MinP)
	}
	if !set["repetition-penalty"] && gen.RepetitionPenalty != nil {
		c.RepetitionPenalty = float32(*gen.RepetitionPenalty)
	}
	if !set["seed"] {
		c.Seed = rand.Uint64()
	}
	if err := c.Validate(); err != nil {
		return c, usageError{err.Error()}
	}
	return c, nil
}

func runGenerate(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("generate", "--model DIR [flags] PROMPT", stderr)
	var mf modelFlags
	var sf samplerFlags
	mf.register(fs)
	sf.register(fs)
	chat := fs.Bool("chat", false, "wrap the prompt in the model's chat template as a user turn")
	system := fs.String("system", "", "system message (with --chat)")
	maxTokens := fs.Int("max-tokens", 256, "the most tokens to generate")
	device := deviceFlag(fs)
	var pf precisionFlags
	pf.register(fs, true, false)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	if *maxTokens < 1 {
		return usagef("--max-tokens %d, want >= 1", *maxTokens)
	}
	if err := checkDevice(*device); err != nil {
		return err
	}
	prec, err := pf.precision(*device)
	if err != nil {
		return err
	}
	prompt, err := text(pos, "prompt")
	if err != nil {
		return err
	}
	l, err := openOn(mf, *device, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := pf.apply(l.runner, prec); err != nil {
		return err
	}
	sc, err := sf.config(l.model.Gen)
	if err != nil {
		return err
	}
	ids, err := l.encode(prompt, *chat, *system, true)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	stream := l.tok.NewStream(true)
	st, err := l.runner.Generate(ids, llama.GenerateOptions{MaxTokens: *maxTokens, Sampler: sc}, func(id int32) bool {
		out.WriteString(stream.Add(id))
		out.Flush()
		return true
	})
	out.WriteString(stream.Flush())
	out.WriteString("\n")
	out.Flush()
	if err != nil {
		return err
	}
	end := "max tokens"
	switch {
	case st.Stopped:
		end = "end of sequence"
	case st.ContextFull:
		end = fmt.Sprintf("context full (%d positions)", l.model.Config.MaxPositions)
	}
	fmt.Fprintf(stderr, "prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.2f tok/s | stop: %s | seed %d, temperature %g, top-k %d, top-p %g\n",
		st.PromptTokens, st.PromptRate(), st.GeneratedTokens, st.GenerateRate(), end, sc.Seed, sc.Temperature, sc.TopK, sc.TopP)
	return nil
}

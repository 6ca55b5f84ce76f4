package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tillerlm/tiller/steer"
)

func runEval(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "--model DIR --vector FILE[:STRENGTH] [--vector …] [--sweep 0,0.2,0.4,0.6] [--relative=false] [--prompts FILE] [--lexicon FILE] --out DIR", stderr)
	var mf modelFlags
	var sf samplerFlags
	var st steerFlags
	mf.register(fs)
	sf.register(fs)
	st.register(fs, 64, "0,0.2,0.4,0.6")
	lexicon := fs.String("lexicon", "lexicon", "emotion lexicon in the NRC EmoLex word-level format (word<TAB>category<TAB>0|1); default: the shipped starter lexicon (joy, trust)")
	out := fs.String("out", "", "folder for generations.jsonl, metrics.json, dose-response.png and dose-response.svg (required)")
	resamples := fs.Int("bootstrap", 2000, "bootstrap resamples for the 95% intervals")
	limit := fs.Int("limit", 0, "use only the first N prompts (0: all)")
	device := deviceFlag(fs)
	var pf precisionFlags
	pf.register(fs, true, true)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := checkDevice(*device); err != nil {
		return err
	}
	prec, err := pf.precision(*device)
	if err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	sweep, err := st.check()
	if err != nil {
		return err
	}
	switch {
	case *out == "":
		return usagef("--out is required")
	case len(sweep) == 0:
		return usagef("--sweep is required")
	case *resamples < 1:
		return usagef("--bootstrap %d, want >= 1", *resamples)
	case *limit < 0:
		return usagef("--limit %d, want >= 0", *limit)
	}
	prompts, promptFile, err := st.readPrompts(pos, "prompts")
	if err != nil {
		return err
	}
	if *limit > 0 && *limit < len(prompts) {
		prompts = prompts[:*limit]
	}
	lx, lexFile, err := readLexicon(*lexicon)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
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
	if !given(fs, "seed") {
		sc.Seed = 0 // an evaluation is reproducible unless asked otherwise
	}
	plan, err := st.plan(l, stderr)
	if err != nil {
		return err
	}
	ids, err := st.encodePrompts(l, prompts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "steering: %s\n", describePlan(plan))
	res, err := steer.Eval(l.runner, l.tok, plan, prompts, ids, steer.EvalOptions{Strengths: sweep,
		Gen: steer.GenOptions{MaxTokens: st.maxTokens, Sampler: sc}, Lexicon: lx, Resamples: *resamples, Progress: stderr})
	if err != nil {
		return err
	}
	res.Table(stdout)
	vectors := make([]map[string]any, len(plan.Vectors))
	for i, a := range plan.Vectors {
		vectors[i] = map[string]any{"file": a.Name, "strength": a.Strength, "hook": a.Vector.Hook, "layers": a.Vector.LayerIndices(), "method": a.Vector.Info.Method, "pairs_sha256": a.Vector.Info.PairsSHA}
	}
	settings := map[string]any{
		"model": mf.name, "vectors": vectors, "sweep": sweep, "relative": plan.Relative, "layers": plan.Layers, "positions": plan.Positions,
		"positions_from_end": plan.FromEnd, "prompts": promptFile, "prompt_count": len(prompts), "lexicon": lexFile, "chat": st.chat,
		"max_tokens": st.maxTokens, "temperature": sc.Temperature, "top_k": sc.TopK, "top_p": sc.TopP, "seed": sc.Seed,
		"bootstrap_resamples": *resamples,
		"word_tokenisation":   "maximal runs of letters, digits and apostrophes, lower-cased, apostrophes at the ends dropped (steer.Words)",
		"perplexity":          "of the generated tokens given the prompt, under the unsteered model; aggregated as a geometric mean",
	}
	files := []string{"generations.jsonl", "metrics.json", "dose-response.png", "dose-response.svg"}
	if err := res.WriteGenerations(filepath.Join(*out, files[0])); err != nil {
		return err
	}
	if err := res.WriteMetrics(filepath.Join(*out, files[1]), settings); err != nil {
		return err
	}
	title := fmt.Sprintf("tiller eval: %s on %s (%d prompts, 95%% bootstrap intervals)", describeVectors(plan), mf.name, len(prompts))
	for _, f := range files[2:] {
		if err := res.PlotDoseResponse(filepath.Join(*out, f), title); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "wrote %s in %s\n", strings.Join(files, ", "), *out)
	return nil
}

func describeVectors(p *steer.Plan) string {
	var names []string
	for _, a := range p.Vectors {
		names = append(names, fmt.Sprintf("%s×%g", filepath.Base(a.Name), a.Strength))
	}
	return strings.Join(names, ", ")
}

// given reports whether the named flag was set on the command line.
func given(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/attrib"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/steer"
	"github.com/tillerlm/tiller/steer/data"
)

// vectorSpec is one --vector: a file and its strength.
type vectorSpec struct {
	path     string
	strength float64
}

// vectorList is the repeatable --vector flag: FILE or FILE:STRENGTH.
type vectorList []vectorSpec

func (v *vectorList) String() string { return fmt.Sprint(*v) }

func (v *vectorList) Set(s string) error {
	spec, err := parseVectorSpec(s)
	if err != nil {
		return err
	}
	*v = append(*v, spec)
	return nil
}

// parseVectorSpec reads FILE[:STRENGTH]; the strength defaults to 1. A suffix after the last colon
// that is not a number is an error unless the whole argument names an existing file.
func parseVectorSpec(s string) (vectorSpec, error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return vectorSpec{s, 1}, nil
	}
	path, num := s[:i], s[i+1:]
	x, err := strconv.ParseFloat(num, 64)
	if err == nil && !math.IsNaN(x) && !math.IsInf(x, 0) {
		return vectorSpec{path, x}, nil
	}
	if _, statErr := os.Stat(s); statErr == nil {
		return vectorSpec{s, 1}, nil
	}
	return vectorSpec{}, fmt.Errorf("strength %q of %q is not a number (write FILE:STRENGTH, e.g. joy.safetensors:4)", num, s)
}

// parseFloats reads a comma-separated list of numbers, such as a --sweep.
func parseFloats(flagName, s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		x, err := strconv.ParseFloat(f, 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, usagef("--%s: %q is not a number (want a comma-separated list such as 0,0.2,0.4)", flagName, f)
		}
		out = append(out, x)
	}
	return out, nil
}

// parseLayers reads layers as "L", "A-B" (inclusive) or a comma-separated mix, checked against
// the model's layer count.
func parseLayers(flagName, s string, layers int) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a > b {
			return nil, usagef("--%s %q: want a layer, a range A-B or a comma-separated list", flagName, s)
		}
		for l := a; l <= b; l++ {
			if l < 0 || l >= layers {
				return nil, fmt.Errorf("--%s: layer %d is out of range: the model has layers 0 to %d", flagName, l, layers-1)
			}
			out = append(out, l)
		}
	}
	return out, nil
}

// shipped reads a file given by path, or else by the name of a data file tiller ships, which
// lookup finds (data.File: joy, prompts, lexicon, …; tasks.File: the attribution sets); it returns
// the bytes and the name to report.
func shipped(arg, what string, lookup func(string) ([]byte, string, bool), names []string) ([]byte, string, error) {
	b, err := os.ReadFile(arg)
	if err == nil {
		return b, arg, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	if b, name, ok := lookup(arg); ok {
		return b, name, nil
	}
	return nil, "", fmt.Errorf("%s: no such file, and not a shipped %s (shipped: %s)", arg, what, strings.Join(names, ", "))
}

// shippedData reads a file, or one of steer/data's shipped files by name.
func shippedData(arg, what string) ([]byte, string, error) {
	return shipped(arg, what, data.File, append(slices.Clone(data.PairSets), data.Prompts, data.Lexicon))
}

// readLexicon reads --lexicon: a file in NRC EmoLex's word-level format, or the shipped starter.
func readLexicon(arg string) (*steer.Lexicon, string, error) {
	b, file, err := shippedData(arg, "lexicon")
	if err != nil {
		return nil, "", err
	}
	lx, err := steer.ParseLexicon(file, b)
	return lx, file, err
}

// steerFlags are the flags steer and eval share: which vectors, where, how strong, which prompts.
type steerFlags struct {
	vectors    vectorList
	layers     string
	positions  string
	locus      string
	relative   bool
	sweep      string
	prompts    string
	chat       bool
	system     string
	maxTokens  int
	otherModel bool
}

func (s *steerFlags) register(fs *flag.FlagSet, maxTokens int, sweep string) {
	fs.Var(&s.vectors, "vector", "steering vector FILE[:STRENGTH] (safetensors or GGUF; strength 1 if omitted); repeat for several")
	fs.StringVar(&s.layers, "layers", "", "layers to steer: L, A-B or a list (default: each vector's own layers; a one-layer vector is applied at every layer listed)")
	fs.StringVar(&s.positions, "positions", "all", "where to add: all, prompt, generated (the last prompt token and every generated one), or locus (the positions of --locus, counted from the end of the prompt)")
	fs.StringVar(&s.locus, "locus", "", "locus.json from `tiller attribute`: its positions_from_end for --positions locus (default: those recorded in the vector)")
	fs.BoolVar(&s.relative, "relative", true, "strengths are multiples of each layer's mean residual norm, recorded in the vector (useful ones are about 0.1 to 0.6); --relative=false: absolute, h += strength·v with v unit-norm")
	fs.StringVar(&s.sweep, "sweep", sweep, "comma-separated strength multipliers: every prompt runs at each, in one batch (e.g. 0,0.2,0.4,0.6)")
	fs.StringVar(&s.prompts, "prompts", "", "JSONL file of {\"prompt\": TEXT} lines (TEXT a string or chat messages), or the shipped set \"prompts\"")
	fs.BoolVar(&s.chat, "chat", true, "render string prompts as one user turn of the chat template (--chat=false: raw text)")
	fs.StringVar(&s.system, "system", "", "system message put before each chat prompt")
	fs.IntVar(&s.maxTokens, "max-tokens", maxTokens, "the most tokens to generate per sequence")
	fs.BoolVar(&s.otherModel, "other-model", false, "use a vector derived on a model of another shape or type (hidden size must still match)")
}

// check validates what can be checked before the model is loaded.
func (s *steerFlags) check() ([]float64, error) {
	if len(s.vectors) == 0 {
		return nil, usagef("--vector is required")
	}
	if s.maxTokens < 1 {
		return nil, usagef("--max-tokens %d, want >= 1", s.maxTokens)
	}
	var sweep []float64
	if s.sweep != "" {
		var err error
		if sweep, err = parseFloats("sweep", s.sweep); err != nil {
			return nil, err
		}
	}
	return sweep, nil
}

// plan loads the vectors, checks them against the model, and makes the steering plan.
func (s *steerFlags) plan(l *loaded, stderr io.Writer) (*steer.Plan, error) {
	c := l.model.Config
	p := &steer.Plan{Positions: s.positions, Relative: s.relative}
	for _, spec := range s.vectors {
		v, err := steer.Load(spec.path)
		if err != nil {
			return nil, err
		}
		if err := v.Check(spec.path, c, s.otherModel); err != nil {
			return nil, err
		}
		if strings.HasPrefix(v.Info.Source, "gguf") {
			fmt.Fprintf(stderr, "note: %s is a GGUF control vector, read with %s\n", spec.path, steer.BlockIndexing)
		}
		p.Vectors = append(p.Vectors, steer.Applied{Name: spec.path, Vector: v, Strength: spec.strength})
		if p.FromEnd == nil && v.Info.FromEnd != nil {
			p.FromEnd = v.Info.FromEnd
		}
	}
	if s.layers != "" {
		ls, err := parseLayers("layers", s.layers, c.Layers)
		if err != nil {
			return nil, err
		}
		p.Layers = ls
	}
	if s.locus != "" {
		loc, err := attrib.ReadLocus(s.locus)
		if err != nil {
			return nil, err
		}
		p.FromEnd = loc.FromEnd
	}
	return p, nil
}

// readPrompts gathers the prompts: the positional arguments (each one prompt) or --prompts.
func (s *steerFlags) readPrompts(pos []string, defaultSet string) ([]steer.Prompt, string, error) {
	switch {
	case len(pos) > 0 && s.prompts != "":
		return nil, "", usagef("give prompts as arguments or with --prompts, not both")
	case len(pos) > 0:
		out := make([]steer.Prompt, len(pos))
		for i, a := range pos {
			out[i] = steer.Prompt{Text: tokenizer.Text{Raw: a}, Line: i + 1}
		}
		return out, "arguments", nil
	}
	name := s.prompts
	if name == "" {
		if defaultSet == "" {
			return nil, "", usagef("no prompts given: pass them as arguments or with --prompts FILE")
		}
		name = defaultSet
	}
	b, file, err := shippedData(name, "prompt set")
	if err != nil {
		return nil, "", err
	}
	ps, err := steer.ParsePrompts(file, b)
	return ps, file, err
}

// encodePrompts encodes each prompt: string prompts as a user turn of the chat template (after
// --system) with the assistant's turn opened, or as raw text with --chat=false; message lists
// through the template as they are (with --system put first if they have none).
func (s *steerFlags) encodePrompts(l *loaded, prompts []steer.Prompt) ([][]int32, error) {
	out := make([][]int32, len(prompts))
	for i, p := range prompts {
		t := p.Text
		if !t.IsChat() && s.chat {
			t = tokenizer.Text{Messages: []chat.Message{{Role: "user", Content: t.Raw}}}
		}
		if t.IsChat() && s.system != "" && t.Messages[0].Role != "system" {
			t.Messages = append([]chat.Message{{Role: "system", Content: s.system}}, t.Messages...)
		}
		if !t.IsChat() && s.system != "" {
			return nil, usagef("--system needs --chat")
		}
		ids, err := l.tok.EncodeText(t, true)
		if err != nil {
			return nil, fmt.Errorf("prompt %d: %v", p.Line, err)
		}
		if len(ids) >= l.model.Config.MaxPositions {
			return nil, fmt.Errorf("prompt %d: %d tokens leave no room to generate: the model takes %d positions (max_position_embeddings)", p.Line, len(ids), l.model.Config.MaxPositions)
		}
		out[i] = ids
	}
	return out, nil
}

func runSteer(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("steer", "--model DIR --vector FILE[:STRENGTH] [--vector …] [--layers A-B] [--positions all|prompt|generated|locus] [--relative=false] [--sweep 0,0.2,0.4] PROMPT…|--prompts FILE", stderr)
	var mf modelFlags
	var sf samplerFlags
	var st steerFlags
	mf.register(fs)
	sf.register(fs)
	st.register(fs, 128, "")
	out := fs.String("out", "", "also write the generations as JSON Lines to this file")
	device := deviceFlag(fs)
	var pf precisionFlags
	pf.register(fs, true, false)
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
	if sweep == nil {
		sweep = []float64{1}
	}
	prompts, _, err := st.readPrompts(pos, "")
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
	plan, err := st.plan(l, stderr)
	if err != nil {
		return err
	}
	ids, err := st.encodePrompts(l, prompts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "steering: %s\n", describePlan(plan))
	gen, stats, err := steer.Generate(l.runner, plan, ids, sweep, steer.GenOptions{MaxTokens: st.maxTokens, Sampler: sc})
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	var jw *json.Encoder
	var jf *os.File
	if *out != "" {
		if jf, err = os.Create(*out); err != nil {
			return err
		}
		defer jf.Close()
		jw = json.NewEncoder(jf)
		jw.SetEscapeHTML(false)
	}
	headers := len(prompts) > 1 || len(sweep) > 1
	for i, p := range prompts {
		for k, s := range sweep {
			g := gen[i][k]
			text := l.tok.Decode(g.Tokens, true)
			if headers {
				fmt.Fprintf(w, "=== prompt %d · strength %g\n", p.Line, s)
			}
			fmt.Fprintln(w, text)
			if jw != nil {
				if err := jw.Encode(map[string]any{"prompt": i, "prompt_text": p.Text, "strength": s, "text": text, "tokens": len(g.Tokens), "token_ids": g.Tokens, "stopped": g.Stopped}); err != nil {
					return err
				}
			}
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d sequences (%d prompts × %d strengths) in one batch: prompts %d tokens in %.2fs | generated %d tokens in %d steps, %.2fs, %.1f tok/s | seed %d, temperature %g\n",
		stats.Sequences, len(prompts), len(sweep), stats.PromptTokens, stats.PromptTime.Seconds(), stats.GeneratedTokens, stats.DecodeSteps,
		stats.GenerateTime.Seconds(), stats.GenerateRate(), sc.Seed, sc.Temperature)
	if jf != nil {
		return jf.Close()
	}
	return nil
}

// describePlan is one line saying what the plan adds where, for stderr.
func describePlan(p *steer.Plan) string {
	var parts []string
	for _, a := range p.Vectors {
		layers := a.Vector.LayerIndices()
		if p.Layers != nil {
			layers = p.Layers
		}
		unit := ""
		if p.Relative {
			unit = "×norm"
		}
		parts = append(parts, fmt.Sprintf("%s at %s of layers %v, strength %g%s", a.Name, a.Vector.Hook, layers, a.Strength, unit))
	}
	return strings.Join(parts, "; ") + ", positions " + p.Positions
}

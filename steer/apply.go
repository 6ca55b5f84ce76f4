package steer

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
)

// ApplyPositions are the token positions a steering plan adds at:
//
//	all        every position: the prompt and every generated token
//	prompt     the prompt's tokens only (the generated ones see the steering through the KV cache)
//	generated  every position whose output chooses a generated token: the prompt's last token
//	           and each generated token after it
//	locus      the prompt positions a locus names, counted from the end of the prompt (0 = its last
//	           token): STAR's localized injection
var ApplyPositions = []string{"all", "prompt", "generated", "locus"}

// Applied is one vector of a plan with its strength: absolute (alpha in h += alpha·v), or with
// Plan.Relative a multiple of the layer's mean residual norm.
type Applied struct {
	Name     string // for messages: the file it came from
	Vector   *Vector
	Strength float64
}

// Plan says how vectors steer a generation.
type Plan struct {
	Vectors []Applied
	// Layers to steer; nil: each vector at its own layers. A vector with one direction is applied
	// at every layer listed; a vector with several must have each listed layer.
	Layers    []int
	Positions string // one of ApplyPositions
	FromEnd   []int  // with Positions "locus": positions counted from the end of the prompt
	Relative  bool   // strengths are multiples of the layer's mean residual norm
}

// term is one addition h += alpha·values at one hook point.
type term struct {
	point  string
	values []float32
	alpha  float64 // strength × the norm when relative; scaled per sequence
}

// terms resolves the plan into additions at hook points and checks it against the model.
func (p *Plan) terms(c *llama.Config) ([]term, error) {
	if !slices.Contains(ApplyPositions, p.Positions) {
		return nil, fmt.Errorf("positions %q: want one of %s", p.Positions, strings.Join(ApplyPositions, ", "))
	}
	if p.Positions == "locus" && len(p.FromEnd) == 0 {
		return nil, fmt.Errorf("--positions locus needs the positions of a locus.json (--locus), or a vector derived at one")
	}
	for _, l := range p.Layers {
		if l < 0 || l >= c.Layers {
			return nil, fmt.Errorf("layer %d is out of range: the model has layers 0 to %d", l, c.Layers-1)
		}
	}
	var out []term
	for _, a := range p.Vectors {
		v := a.Vector
		if math.IsNaN(a.Strength) || math.IsInf(a.Strength, 0) {
			return nil, fmt.Errorf("%s: strength %g is not a finite number", a.Name, a.Strength)
		}
		layers := p.Layers
		if layers == nil {
			layers = v.LayerIndices()
		}
		for _, l := range layers {
			dir, ok := v.Layer(l)
			if !ok {
				if len(v.Layers) != 1 {
					return nil, fmt.Errorf("%s has no direction for layer %d (it has layers %v)", a.Name, l, v.LayerIndices())
				}
				dir = &v.Layers[0] // one direction: used at every layer asked for
			}
			if len(dir.Values) != c.Dim {
				return nil, fmt.Errorf("%s: the vector has %d values, but the model's hidden_size is %d", a.Name, len(dir.Values), c.Dim)
			}
			alpha := a.Strength
			if p.Relative {
				if dir.MeanNorm <= 0 {
					return nil, fmt.Errorf("%s records no residual norm for layer %d, so a relative strength cannot scale it; give absolute strengths (--relative=false)", a.Name, dir.Index)
				}
				alpha *= dir.MeanNorm
			}
			out = append(out, term{point: fmt.Sprintf("blocks.%d.%s", l, v.Hook), values: dir.Values, alpha: alpha})
		}
	}
	return out, nil
}

// Hooks builds the hook sets that steer a batch of sequences: sequence i has a prompt of
// promptLens[i] tokens and scales every vector's strength by scales[i] (a sweep gives each copy
// of a prompt its own scale; 1 everywhere applies the plan as it is). Prefill is for the passes
// over the prompts, decode for the decode steps (llama.BatchOptions); either is nil when nothing
// is added in that phase, so strength 0 everywhere runs the unsteered fast path, and a sequence
// at scale 0 gets no addition at all.
func (p *Plan) Hooks(c *llama.Config, promptLens []int, scales []float64) (prefill, decode *hooks.Set, err error) {
	if len(promptLens) != len(scales) {
		panic(fmt.Sprintf("steer: %d prompt lengths for %d scales", len(promptLens), len(scales)))
	}
	terms, err := p.terms(c)
	if err != nil {
		return nil, nil, err
	}
	for _, s := range scales {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return nil, nil, fmt.Errorf("strength %g is not a finite number", s)
		}
	}
	dims := c.HookDims()
	// add registers one term for the sequences seqs (nil: all) at positions where(seq) (nil: all).
	add := func(set **hooks.Set, t term, seqs []int, where func(seq int) []int32) error {
		if *set == nil {
			*set = hooks.NewSet(dims)
		}
		if where == nil {
			// One entry for every row; per-sequence strengths unless they are all the same.
			st := hooks.Steer{Vector: t.values}
			if same(scales) {
				st.Alpha = float32(t.alpha * scales[0])
			} else {
				st.SeqAlpha = make(map[int32]float32, len(scales))
				for i, s := range scales {
					st.SeqAlpha[int32(i)] = float32(t.alpha * s)
				}
			}
			return (*set).Add(t.point, st)
		}
		for _, i := range seqs {
			pos := where(i)
			if len(pos) == 0 || scales[i] == 0 {
				continue
			}
			st := hooks.Steer{Vector: t.values, Alpha: float32(t.alpha * scales[i]), Where: hooks.Where{Seqs: []int32{int32(i)}, Positions: pos}}
			if err := (*set).Add(t.point, st); err != nil {
				return err
			}
		}
		return nil
	}
	all := make([]int, len(scales))
	for i := range all {
		all[i] = i
	}
	if allZero(scales) {
		return nil, nil, nil
	}
	for _, t := range terms {
		if t.alpha == 0 {
			continue
		}
		switch p.Positions {
		case "all":
			err = add(&prefill, t, nil, nil)
			if err == nil {
				err = add(&decode, t, nil, nil)
			}
		case "prompt":
			err = add(&prefill, t, nil, nil) // a prefill pass holds prompt tokens only
		case "generated":
			err = add(&prefill, t, all, func(i int) []int32 { return []int32{int32(promptLens[i] - 1)} })
			if err == nil {
				err = add(&decode, t, nil, nil)
			}
		case "locus":
			err = add(&prefill, t, all, func(i int) []int32 {
				var pos []int32
				for _, k := range p.FromEnd {
					if at := promptLens[i] - 1 - k; at >= 0 {
						pos = append(pos, int32(at))
					}
				}
				return pos
			})
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return prefill, decode, nil
}

func same(xs []float64) bool {
	for _, x := range xs {
		if x != xs[0] {
			return false
		}
	}
	return true
}

func allZero(xs []float64) bool {
	for _, x := range xs {
		if x != 0 {
			return false
		}
	}
	return true
}

// GenOptions control Generate.
type GenOptions struct {
	MaxTokens int
	// Sampler chooses tokens; the copy of prompt i at every strength samples with seed
	// Sampler.Seed+i, so a sweep compares strengths on the same random numbers.
	Sampler       llama.SamplerConfig
	Stop          []int32 // nil: the model's eos ids
	PrefillTokens int     // see llama.BatchOptions
	Emit          func(prompt, strength int, token int32) bool
}

// Generate continues every prompt at every scale of the plan's strengths (the sweep) in one
// batched generation: sequence prompt·len(scales)+k is prompt at scales[k]. out[prompt][k] is
// what it generated.
func Generate(r *llama.Runner, plan *Plan, prompts [][]int32, scales []float64, opts GenOptions) ([][]llama.Generated, llama.BatchStats, error) {
	if len(prompts) == 0 || len(scales) == 0 {
		return nil, llama.BatchStats{}, fmt.Errorf("no prompts or no strengths")
	}
	ns := len(scales)
	seqs := make([]llama.Sequence, 0, len(prompts)*ns)
	lens := make([]int, 0, len(prompts)*ns)
	seqScale := make([]float64, 0, len(prompts)*ns)
	for i, ids := range prompts {
		for _, s := range scales {
			sc := opts.Sampler
			sc.Seed += uint64(i)
			seqs = append(seqs, llama.Sequence{Prompt: ids, MaxTokens: opts.MaxTokens, Sampler: sc, Stop: opts.Stop})
			lens = append(lens, len(ids))
			seqScale = append(seqScale, s)
		}
	}
	prefill, decode, err := plan.Hooks(r.Model.Config, lens, seqScale)
	if err != nil {
		return nil, llama.BatchStats{}, err
	}
	bo := llama.BatchOptions{Prefill: prefill, Decode: decode, PrefillTokens: opts.PrefillTokens}
	if opts.Emit != nil {
		bo.Emit = func(i int, tok int32) bool { return opts.Emit(i/ns, i%ns, tok) }
	}
	gen, st, err := r.GenerateBatch(seqs, bo)
	if err != nil {
		return nil, st, err
	}
	out := make([][]llama.Generated, len(prompts))
	for i := range prompts {
		out[i] = gen[i*ns : (i+1)*ns]
	}
	return out, st, nil
}

package steer

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/gonum/mat"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/tensor"
)

// Ways of reducing a text's activations to one vector, and ways of making a direction of the
// paired differences.
var (
	ReducePositions = []string{"last", "mean-response", "all"}
	Methods         = []string{"mean", "pca"}
)

// DeriveOptions control Derive.
type DeriveOptions struct {
	Hook   string // point within each layer, one of SteerableHooks
	Layers []int  // layers to derive a direction at
	// Positions reduces each text's activations (rows of (pos, d_model)) to one vector:
	//   last           the last token
	//   mean-response  the mean over the reply: for chat messages ending in an assistant turn, the
	//                  tokens of that turn's content (its header and closing <|eot_id|> left out);
	//                  for raw text, as all
	//   all            the mean over every token but a leading BOS (whose activation is the same
	//                  in every text)
	Positions string
	// Method makes a direction of the paired differences d_i = a(positive_i) − a(negative_i):
	//   mean  mean of d_i (ActAdd over many pairs, CAA)
	//   pca   first principal component of the d_i about the origin (RepE/repeng). Uncentred: the
	//         mean difference is the signal, and RepE's randomly signed differences have zero mean,
	//         so centring them there and leaving them uncentred here find the same axis.
	// Either way the sign is chosen so that positives project higher, and the result is unit norm.
	Method string
	// HoldOut is the fraction of pairs left out of the derivation for the sign test, spread evenly
	// through the file (pair i is held out when ⌊(i+1)·h⌋ > ⌊i·h⌋); 0 uses every pair.
	HoldOut float64
	// PassTokens caps the tokens of one forward pass: texts are packed whole into passes, each text
	// its own sequence of the batch. 0 means 1024.
	PassTokens int
	Progress   io.Writer // one line per pass; nil: quiet
}

// Derive computes a steering vector from contrastive pairs: it runs every text (both sides of every
// pair) through the model in batched passes, reads the activations at the options' hook point of
// each layer, reduces each text to one vector, and makes a unit direction per layer from the
// paired differences, with the measurements recorded in each Layer. The caller fills the Info's
// model and pair-file fields.
func Derive(r *llama.Runner, tok *tokenizer.Tokenizer, pairs []Pair, opts DeriveOptions) (*Vector, error) {
	c := r.Model.Config
	if len(pairs) == 0 {
		return nil, fmt.Errorf("no pairs")
	}
	if !slices.Contains(SteerableHooks, opts.Hook) {
		return nil, fmt.Errorf("hook %q cannot carry a steering vector: want one of %s", opts.Hook, strings.Join(SteerableHooks, ", "))
	}
	if !slices.Contains(ReducePositions, opts.Positions) {
		return nil, fmt.Errorf("positions %q: want one of %s", opts.Positions, strings.Join(ReducePositions, ", "))
	}
	if !slices.Contains(Methods, opts.Method) {
		return nil, fmt.Errorf("method %q: want one of %s", opts.Method, strings.Join(Methods, ", "))
	}
	if !(opts.HoldOut >= 0 && opts.HoldOut < 1) {
		return nil, fmt.Errorf("held-out fraction %g: want 0 <= h < 1", opts.HoldOut)
	}
	if len(opts.Layers) == 0 {
		return nil, fmt.Errorf("no layers to derive at")
	}
	for _, l := range opts.Layers {
		if l < 0 || l >= c.Layers {
			return nil, fmt.Errorf("layer %d is out of range: the model has layers 0 to %d", l, c.Layers-1)
		}
	}
	layers := slices.Clone(opts.Layers)
	slices.Sort(layers)
	layers = slices.Compact(layers)

	// Encode both sides of every pair: text 2i is pair i's positive, 2i+1 its negative.
	texts := make([]span, 0, 2*len(pairs))
	for _, p := range pairs {
		for _, side := range []struct {
			name string
			t    tokenizer.Text
		}{{"positive", p.Positive}, {"negative", p.Negative}} {
			s, err := encodeSpan(tok, side.t, opts.Positions)
			if err != nil {
				return nil, fmt.Errorf("pair on line %d, %s: %v", p.Line, side.name, err)
			}
			if len(s.ids) > c.MaxPositions {
				return nil, fmt.Errorf("pair on line %d, %s: %d tokens, more than the model's %d positions", p.Line, side.name, len(s.ids), c.MaxPositions)
			}
			texts = append(texts, s)
		}
	}
	acts, err := collect(r, texts, layers, opts)
	if err != nil {
		return nil, err
	}

	held := make([]bool, len(pairs))
	nHeld := 0
	for i := range pairs {
		held[i] = math.Floor(float64(i+1)*opts.HoldOut) > math.Floor(float64(i)*opts.HoldOut)
		if held[i] {
			nHeld++
		}
	}
	v := &Vector{Hook: opts.Hook, Info: Info{Method: opts.Method, Positions: opts.Positions, TrainPairs: len(pairs) - nHeld, HeldPairs: nHeld, Source: "tiller derive"}}
	for k, l := range layers {
		var train, test [][]float64
		for i := range pairs {
			d := sub(acts.reduced[2*i][k], acts.reduced[2*i+1][k])
			if held[i] {
				test = append(test, d)
			} else {
				train = append(train, d)
			}
		}
		dir := direction(train, opts.Method)
		out := Layer{Index: l, Values: make([]float32, len(dir)), MeanNorm: acts.normSum[k] / float64(acts.normCount), HeldAcc: math.NaN()}
		for j, x := range dir {
			out.Values[j] = float32(x)
		}
		out.Gap, out.TrainAcc = separation(train, dir)
		if len(test) > 0 {
			_, out.HeldAcc = separation(test, dir)
		}
		v.Layers = append(v.Layers, out)
	}
	return v, nil
}

// span is a text's ids and the positions [lo, hi) that are reduced to its vector.
type span struct {
	ids    []int32
	lo, hi int
}

// encodeSpan encodes a text (chat messages without a generation prompt) and finds its positions.
func encodeSpan(tok *tokenizer.Tokenizer, t tokenizer.Text, positions string) (span, error) {
	ids, err := tok.EncodeText(t, false)
	if err != nil {
		return span{}, err
	}
	if len(ids) == 0 {
		return span{}, fmt.Errorf("the text has no tokens")
	}
	s := span{ids: ids, lo: 0, hi: len(ids)}
	if bos, ok := tok.BOS(); ok && ids[0] == bos && len(ids) > 1 {
		s.lo = 1
	}
	switch positions {
	case "last":
		s.lo = len(ids) - 1
	case "mean-response":
		if !t.IsChat() {
			return span{}, fmt.Errorf("--positions mean-response needs chat messages that end with the assistant's reply; raw text has no reply to find (use --positions all or last)")
		}
		last := t.Messages[len(t.Messages)-1]
		if last.Role != "assistant" || len(t.Messages) < 2 {
			return span{}, fmt.Errorf("--positions mean-response needs chat messages that end with the assistant's reply (this text ends with a %q message)", last.Role)
		}
		// The reply's tokens lie between the conversation before it with the assistant's turn
		// opened, and the whole conversation with the reply left open (nothing the template writes
		// after it): both must be prefixes of the whole, or the tokens at the seams changed.
		prefix, err := tok.EncodeChat(t.Messages[:len(t.Messages)-1], true)
		if err != nil {
			return span{}, err
		}
		text, err := tok.ContinueChat(t.Messages)
		if err != nil {
			return span{}, err
		}
		open, err := tok.Encode(text, false)
		if err != nil {
			return span{}, err
		}
		if len(prefix) > len(open) || !slices.Equal(prefix, open[:len(prefix)]) || len(open) > len(ids) || !slices.Equal(open, ids[:len(open)]) {
			return span{}, fmt.Errorf("the chat template's rendering of the conversation before the reply, and of the reply itself, do not encode to prefixes of the whole: cannot find the reply's tokens")
		}
		s.lo, s.hi = len(prefix), len(open)
		if s.hi <= s.lo {
			return span{}, fmt.Errorf("the assistant's reply is empty")
		}
	}
	return s, nil
}

// activations are the texts' reduced vectors by text and layer, and the sum of the norms of every
// reduced token's activation per layer.
type activations struct {
	reduced   [][][]float64 // (text, layer, d_model)
	normSum   []float64     // (layer)
	normCount int
}

// collect runs the texts through the model in packed passes, each text its own sequence, reading
// the hook point at every layer (no logits are computed), and reduces each text's rows.
func collect(r *llama.Runner, texts []span, layers []int, opts DeriveOptions) (*activations, error) {
	c := r.Model.Config
	names := make([]string, len(layers))
	for k, l := range layers {
		names[k] = fmt.Sprintf("blocks.%d.%s", l, opts.Hook)
	}
	limit := opts.PassTokens
	if limit <= 0 {
		limit = 1024
	}
	acts := &activations{reduced: make([][][]float64, len(texts)), normSum: make([]float64, len(layers))}
	var kv *tensor.KVCache
	defer func() { r.FreeKVCache(kv) }() // a device's memory is not the garbage collector's
	passes, tokens := 0, 0
	start := time.Now()
	said := start
	for lo := 0; lo < len(texts); passes++ {
		hi, n, room := lo, 0, 0
		for hi < len(texts) && (hi == lo || n+len(texts[hi].ids) <= limit) {
			n += len(texts[hi].ids)
			room += (len(texts[hi].ids) + 15) / 16 * 16
			hi++
		}
		kv = r.ReuseKVCache(kv, room, max(room, limit+16*(hi-lo)), 16)
		var b llama.Batch
		for i := lo; i < hi; i++ {
			p := llama.Prompt(int32(i-lo), texts[i].ids, 0, false)
			b.Tokens = append(b.Tokens, p.Tokens...)
			b.Seq = append(b.Seq, p.Seq...)
			b.Pos = append(b.Pos, p.Pos...)
		}
		b.Logits = make([]bool, len(b.Tokens)) // activations only: the LM head is skipped
		set := hooks.NewSet(c.HookDims())
		if err := set.Read(strings.Join(names, ",")); err != nil {
			return nil, err
		}
		if _, err := r.Forward(b, kv, set); err != nil {
			return nil, err
		}
		for i := lo; i < hi; i++ {
			s := texts[i]
			acts.reduced[i] = make([][]float64, len(layers))
			for k, name := range names {
				t, ok := set.Cache.Get(int32(i-lo), name)
				if !ok {
					return nil, fmt.Errorf("steer: no activation at %s for sequence %d", name, i-lo)
				}
				x := t.ToF64() // (pos, d)
				d := c.Dim
				mean := make([]float64, d)
				for p := s.lo; p < s.hi; p++ {
					row := x[p*d : (p+1)*d]
					var sq float64
					for j, v := range row {
						mean[j] += v
						sq += v * v
					}
					acts.normSum[k] += math.Sqrt(sq)
				}
				for j := range mean {
					mean[j] /= float64(s.hi - s.lo)
				}
				acts.reduced[i][k] = mean
			}
			acts.normCount += s.hi - s.lo
			kv.Release(i - lo)
		}
		tokens += n
		if opts.Progress != nil && (hi == len(texts) || time.Since(said) > 5*time.Second) {
			fmt.Fprintf(opts.Progress, "derive: %d of %d texts, %d tokens in %d passes, %.1fs\n", hi, len(texts), tokens, passes+1, time.Since(start).Seconds())
			said = time.Now()
		}
		lo = hi
	}
	return acts, nil
}

func sub(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// direction makes a unit vector of the differences (rows of D, (n, d)): their mean, or their
// first principal component about the origin, the top right singular vector of D, found as
// Dᵀu/|Dᵀu| for the top eigenvector u of the (n, n) Gram matrix D·Dᵀ (n pairs ≪ d_model). The
// sign makes the mean projection positive.
func direction(D [][]float64, method string) []float64 {
	n, d := len(D), len(D[0])
	v := make([]float64, d)
	switch method {
	case "mean":
		for _, row := range D {
			for j, x := range row {
				v[j] += x / float64(n)
			}
		}
	case "pca":
		g := mat.NewSymDense(n, nil)
		for i := 0; i < n; i++ {
			for j := i; j < n; j++ {
				g.SetSym(i, j, dot(D[i], D[j]))
			}
		}
		var eig mat.EigenSym
		if !eig.Factorize(g, true) {
			panic("steer: eigendecomposition of the Gram matrix failed")
		}
		var vecs mat.Dense
		eig.VectorsTo(&vecs)
		top := n - 1 // eigenvalues ascend
		for i := 0; i < n; i++ {
			u := vecs.At(i, top)
			for j, x := range D[i] {
				v[j] += u * x
			}
		}
	default:
		panic("steer: unknown method " + method)
	}
	norm := math.Sqrt(dot(v, v))
	if norm == 0 {
		return v // all pairs identical: nothing to steer with; the caller's gap of 0 shows it
	}
	var mean float64
	for _, row := range D {
		mean += dot(row, v)
	}
	sign := 1.0
	if mean < 0 {
		sign = -1
	}
	for j := range v {
		v[j] *= sign / norm
	}
	return v
}

// separation is the mean projection of the differences on v (the projection gap between
// positives and negatives) and the fraction of them that project above zero (the sign test).
func separation(D [][]float64, v []float64) (gap, acc float64) {
	if len(D) == 0 {
		return math.NaN(), math.NaN()
	}
	right := 0
	for _, row := range D {
		p := dot(row, v)
		gap += p
		if p > 0 {
			right++
		}
	}
	return gap / float64(len(D)), float64(right) / float64(len(D))
}

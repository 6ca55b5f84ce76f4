package steer

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/tokenizer"
)

// EvalOptions control Eval.
type EvalOptions struct {
	Strengths  []float64 // the sweep: each scales every vector's strength
	Gen        GenOptions
	Lexicon    *Lexicon // nil: no emotion rates
	Resamples  int      // bootstrap resamples for the intervals; 0: 2000
	PassTokens int      // tokens per pass when scoring perplexity
	Progress   io.Writer
}

// Record is one generation of an evaluation: a line of generations.jsonl.
type Record struct {
	Prompt     int            `json:"prompt"`      // index in the prompt file, from 0
	Line       int            `json:"prompt_line"` // its line in the file
	PromptText tokenizer.Text `json:"prompt_text"`
	Strength   float64        `json:"strength"`
	Text       string         `json:"text"`
	Tokens     int            `json:"tokens"`
	TokenIDs   []int32        `json:"token_ids"` // the generated ids, the stop id left off
	Stopped    bool           `json:"stopped"`   // ended on a stop id rather than the token limit
	Perplexity *float64       `json:"perplexity"`
	Scores
}

// Metric names a measure reported per strength.
type Metric struct {
	Key   string // the key in metrics.json
	Label string // for the table and plot
}

// Row is one strength's aggregates: each metric's mean over the prompts (geometric mean for
// perplexity) with a 95% bootstrap interval over prompts.
type Row struct {
	Strength float64             `json:"strength"`
	Metrics  map[string]Interval `json:"metrics"`
}

// Result is an evaluation: every generation and the aggregates per strength.
type Result struct {
	Metrics []Metric
	Rows    []Row
	Records []Record
	Stats   llama.BatchStats
}

// Eval generates a continuation of every prompt at every strength of the sweep in one batched
// generation, scores each (VADER compound, emotion rates from the lexicon, first-person pronoun
// rate, perplexity under the unsteered model) and aggregates per strength. ids are the encoded
// prompts.
func Eval(r *llama.Runner, tok *tokenizer.Tokenizer, plan *Plan, prompts []Prompt, ids [][]int32, opts EvalOptions) (*Result, error) {
	if len(opts.Strengths) == 0 {
		return nil, fmt.Errorf("no strengths to evaluate")
	}
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "eval: generating %d prompts × %d strengths = %d sequences in one batch, up to %d tokens each\n",
			len(prompts), len(opts.Strengths), len(prompts)*len(opts.Strengths), opts.Gen.MaxTokens)
	}
	gen, st, err := Generate(r, plan, ids, opts.Strengths, opts.Gen)
	if err != nil {
		return nil, err
	}
	res := &Result{Stats: st}
	var ps, cs [][]int32
	for i, p := range prompts {
		for k, s := range opts.Strengths {
			g := gen[i][k]
			text := tok.Decode(g.Tokens, true)
			res.Records = append(res.Records, Record{Prompt: i, Line: p.Line, PromptText: p.Text, Strength: s, Text: text,
				Tokens: len(g.Tokens), TokenIDs: g.Tokens, Stopped: g.Stopped, Scores: Score(text, opts.Lexicon)})
			ps, cs = append(ps, ids[i]), append(cs, g.Tokens)
		}
	}
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "eval: generated %d tokens in %.1fs (%.1f tok/s); scoring perplexity under the unsteered model\n",
			st.GeneratedTokens, (st.PromptTime + st.GenerateTime).Seconds(), st.GenerateRate())
	}
	ppl, err := Perplexities(r, ps, cs, opts.PassTokens)
	if err != nil {
		return nil, err
	}
	for i, x := range ppl {
		if !math.IsNaN(x) {
			res.Records[i].Perplexity = &x
		}
	}
	res.aggregate(opts)
	return res, nil
}

func (res *Result) aggregate(opts EvalOptions) {
	res.Metrics = []Metric{{"vader_compound", "VADER compound"}}
	if opts.Lexicon != nil {
		for _, c := range opts.Lexicon.Categories {
			res.Metrics = append(res.Metrics, Metric{c + "_per100", c + " words /100"})
		}
	}
	res.Metrics = append(res.Metrics, Metric{"first_person_per100", "1st-person /100"}, Metric{"perplexity", "perplexity"}, Metric{"words", "words"})
	resamples := opts.Resamples
	if resamples <= 0 {
		resamples = 2000
	}
	for k, s := range opts.Strengths {
		row := Row{Strength: s, Metrics: map[string]Interval{}}
		for _, m := range res.Metrics {
			var xs []float64
			for _, rec := range res.Records {
				if rec.Strength == s {
					xs = append(xs, rec.value(m.Key))
				}
			}
			stat := Mean
			if m.Key == "perplexity" {
				stat = GeoMean
			}
			row.Metrics[m.Key] = Bootstrap(xs, stat, resamples, uint64(k)+1)
		}
		res.Rows = append(res.Rows, row)
	}
}

// value is the record's measure under a metric key; NaN where it has none.
func (rec *Record) value(key string) float64 {
	switch key {
	case "vader_compound":
		return rec.Compound
	case "first_person_per100":
		return rec.Pronouns
	case "words":
		return float64(rec.Words)
	case "perplexity":
		if rec.Perplexity == nil {
			return math.NaN()
		}
		return *rec.Perplexity
	}
	if c, ok := strings.CutSuffix(key, "_per100"); ok {
		if x, ok := rec.Emotions[c]; ok {
			return x
		}
	}
	return math.NaN()
}

// Table writes the aggregates as an aligned text table: a row per strength, a column per metric,
// each "mean [lo, hi]".
func (res *Result) Table(w io.Writer) {
	cells := [][]string{{"strength"}}
	for _, m := range res.Metrics {
		cells[0] = append(cells[0], m.Label)
	}
	for _, row := range res.Rows {
		line := []string{fmt.Sprintf("%g", row.Strength)}
		for _, m := range res.Metrics {
			iv := row.Metrics[m.Key]
			if math.IsNaN(iv.Value) {
				line = append(line, "—")
				continue
			}
			prec := 3
			if m.Key == "perplexity" || m.Key == "words" {
				prec = 1
			} else if strings.HasSuffix(m.Key, "_per100") {
				prec = 2
			}
			line = append(line, fmt.Sprintf("%.*f [%.*f, %.*f]", prec, iv.Value, prec, iv.Lo, prec, iv.Hi))
		}
		cells = append(cells, line)
	}
	widths := make([]int, len(cells[0]))
	for _, line := range cells {
		for j, c := range line {
			widths[j] = max(widths[j], len([]rune(c)))
		}
	}
	for _, line := range cells {
		for j, c := range line {
			pad := widths[j] - len([]rune(c))
			if j == 0 {
				fmt.Fprintf(w, "%s%s", c, strings.Repeat(" ", pad))
			} else {
				fmt.Fprintf(w, "  %s%s", strings.Repeat(" ", pad), c)
			}
		}
		fmt.Fprintln(w)
	}
}

// WriteGenerations writes the records as JSON Lines.
func (res *Result) WriteGenerations(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for i := range res.Records {
		if err := enc.Encode(&res.Records[i]); err != nil {
			f.Close()
			return fmt.Errorf("%s: %v", path, err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteMetrics writes metrics.json: the run's settings (given by the caller) and, per strength,
// each metric's value with its 95% bootstrap interval.
func (res *Result) WriteMetrics(path string, settings map[string]any) error {
	keys := make([]map[string]string, len(res.Metrics))
	for i, m := range res.Metrics {
		keys[i] = map[string]string{"key": m.Key, "label": m.Label}
	}
	doc := map[string]any{
		"settings":  settings,
		"metrics":   keys,
		"strengths": res.Rows,
		"interval":  "95% percentile bootstrap over prompts",
		"generation": map[string]any{"sequences": res.Stats.Sequences, "generated_tokens": res.Stats.GeneratedTokens,
			"decode_steps": res.Stats.DecodeSteps, "seconds": (res.Stats.PromptTime + res.Stats.GenerateTime).Seconds()},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

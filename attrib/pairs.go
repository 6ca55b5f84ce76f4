package attrib

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama/tokenizer"
)

// Pair is one line of a pairs file (JSONL):
//
//	{"clean": TEXT, "corrupt": TEXT, "metric": {"logit_diff": [ANSWER, DISTRACTOR]}}
//	{"clean": TEXT, "corrupt": TEXT, "metric": {"logprob": "continuation text"}}
//
// TEXT is a string (raw text, encoded with the tokenizer's BOS) or a list of chat messages
// ({"role", "content"}) that the chat template renders. A chat whose last message is the user's
// ends with the assistant's turn opened; one whose last message is the assistant's ends inside
// that message (whatever the template writes after it left off, as transformers' continue_final_message
// does), so the metric reads how the model would continue the
// reply. logit_diff is logit(ANSWER) − logit(DISTRACTOR) at the last prompt token, each written as
// the text of one token or as #ID; logprob is the summed log-probability of the continuation's
// tokens after the prompt. Optional "id" and "note" fields are carried along for reports.
type Pair struct {
	ID      string         `json:"id,omitempty"`
	Note    string         `json:"note,omitempty"`
	Clean   tokenizer.Text `json:"clean"`
	Corrupt tokenizer.Text `json:"corrupt"`
	Metric  MetricSpec     `json:"metric"`
	Line    int            `json:"-"` // 1-based line in the file
}

// MetricSpec is a pair's metric as the file gives it: exactly one of the two.
type MetricSpec struct {
	LogitDiff []string // [answer, distractor]
	LogProb   string   // the continuation
}

// Name is "logit_diff" or "logprob".
func (m MetricSpec) Name() string {
	if m.LogitDiff != nil {
		return "logit_diff"
	}
	return "logprob"
}

func (m MetricSpec) String() string {
	if m.LogitDiff != nil {
		return fmt.Sprintf("logit_diff %q − %q", m.LogitDiff[0], m.LogitDiff[1])
	}
	return fmt.Sprintf("logprob %q", m.LogProb)
}

func (m *MetricSpec) UnmarshalJSON(b []byte) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf(`metric: want {"logit_diff": [answer, distractor]} or {"logprob": "continuation"}`)
	}
	if len(obj) != 1 {
		return fmt.Errorf(`metric has %d keys, want exactly one: {"logit_diff": [answer, distractor]} or {"logprob": "continuation"}`, len(obj))
	}
	for k, v := range obj {
		switch k {
		case "logit_diff":
			var ans []string
			if err := json.Unmarshal(v, &ans); err != nil || len(ans) != 2 {
				return fmt.Errorf(`metric logit_diff: want two tokens, [answer, distractor], got %s`, v)
			}
			*m = MetricSpec{LogitDiff: ans}
		case "logprob":
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf(`metric logprob: want the continuation as a string, got %s`, v)
			}
			if s == "" {
				return fmt.Errorf(`metric logprob: the continuation is empty`)
			}
			*m = MetricSpec{LogProb: s}
		default:
			return fmt.Errorf(`unknown metric %q: want {"logit_diff": [answer, distractor]} or {"logprob": "continuation"}`, k)
		}
	}
	return nil
}

func (m MetricSpec) MarshalJSON() ([]byte, error) {
	if m.LogitDiff != nil {
		return json.Marshal(map[string][]string{"logit_diff": m.LogitDiff})
	}
	return json.Marshal(map[string]string{"logprob": m.LogProb})
}

// ReadPairs reads a pairs file. Blank lines are skipped. Errors name the file and line.
func ReadPairs(path string) ([]Pair, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pairs, err := ParsePairs(f)
	if err != nil {
		return nil, fmt.Errorf("%s%v", path, err)
	}
	return pairs, nil
}

// ParsePairs reads JSONL pairs. Errors start with ":LINE: " (or ": " for the whole input) so that
// the caller can put the file name in front.
func ParsePairs(r io.Reader) ([]Pair, error) {
	br := bufio.NewReader(r)
	var pairs []Pair
	for line := 1; ; line++ {
		text, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf(":%d: %v", line, err)
		}
		if t := bytes.TrimSpace(text); len(t) > 0 {
			p, perr := parsePair(t)
			if perr != nil {
				return nil, fmt.Errorf(":%d: %v", line, perr)
			}
			p.Line = line
			pairs = append(pairs, p)
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf(": no pairs (the file is empty); want one JSON object per line: {\"clean\": …, \"corrupt\": …, \"metric\": …}")
	}
	return pairs, nil
}

func parsePair(line []byte) (Pair, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return Pair{}, fmt.Errorf("malformed JSON: %v", jsonError(err))
	}
	for k := range raw {
		switch k {
		case "id", "note", "clean", "corrupt", "metric":
		default:
			return Pair{}, fmt.Errorf("unknown field %q (a pair has clean, corrupt, metric, and optionally id and note)", k)
		}
	}
	for _, k := range []string{"clean", "corrupt", "metric"} {
		v, ok := raw[k]
		if !ok {
			return Pair{}, fmt.Errorf("missing %q", k)
		}
		if string(bytes.TrimSpace(v)) == "null" {
			return Pair{}, fmt.Errorf("%s is null", k)
		}
	}
	var p Pair
	for k, v := range raw {
		var err error
		switch k {
		case "id":
			err = json.Unmarshal(v, &p.ID)
		case "note":
			err = json.Unmarshal(v, &p.Note)
		case "clean":
			err = json.Unmarshal(v, &p.Clean)
		case "corrupt":
			err = json.Unmarshal(v, &p.Corrupt)
		case "metric":
			err = json.Unmarshal(v, &p.Metric)
		}
		if err != nil {
			return Pair{}, fmt.Errorf("%s: %v", k, jsonError(err))
		}
	}
	return p, nil
}

// jsonError drops encoding/json's Go type names from an error where they would only confuse.
func jsonError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("a JSON %s where %s was expected", te.Value, strings.TrimPrefix(te.Type.String(), "tokenizer."))
	}
	return err.Error()
}

// Align says how clean and corrupt prompts of different lengths line up.
type Align uint8

const (
	AlignNone  Align = iota // the prompts must have the same token length
	AlignRight              // the shorter is padded on the left: positions pair up counted from the end
)

// ParseAlign reads "none" or "right".
func ParseAlign(s string) (Align, error) {
	switch s {
	case "none", "":
		return AlignNone, nil
	case "right":
		return AlignRight, nil
	}
	return 0, fmt.Errorf("align %q: want none or right", s)
}

func (a Align) String() string {
	if a == AlignRight {
		return "right"
	}
	return "none"
}

// Input is a pair as token ids, ready to run.
type Input struct {
	Line    int
	ID      string
	Metric  MetricSpec
	Clean   []int32 // the clean prompt
	Corrupt []int32 // the corrupt prompt
	Cont    []int32 // logprob: the continuation, run after either prompt
	A, B    int32   // logit_diff: answer and distractor
	// Shift is len(Clean) − len(Corrupt): clean position p is patched from corrupt position
	// p − Shift (right alignment); positions with no counterpart are not patched.
	Shift  int
	Labels []string // the clean prompt's tokens as text, for reports
}

// Encoder turns text into token ids: *tokenizer.Tokenizer.
type Encoder interface {
	Encode(text string, addSpecial bool) ([]int32, error)
	RenderChat(msgs []chat.Message, addGenerationPrompt bool) (string, error)
	ContinueChat(msgs []chat.Message) (string, error)
	Decode(ids []int32, skipSpecial bool) string
}

// EncodeOptions say how pairs become inputs.
type EncodeOptions struct {
	Vocab        int // the model's vocabulary size: every id must be below it
	MaxPositions int // the model's max_position_embeddings (0: no limit)
	Align        Align
}

// Encode tokenizes pairs, checking ids against the vocabulary and lengths against each other.
// Errors name the pair's line.
func Encode(tok Encoder, pairs []Pair, opt EncodeOptions) ([]*Input, error) {
	out := make([]*Input, len(pairs))
	for i, p := range pairs {
		in, err := encodePair(tok, p, opt)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", p.Line, err)
		}
		out[i] = in
	}
	return out, nil
}

func encodePair(tok Encoder, p Pair, opt EncodeOptions) (*Input, error) {
	in := &Input{Line: p.Line, ID: p.ID, Metric: p.Metric}
	var err error
	if in.Clean, err = EncodePrompt(tok, p.Clean); err != nil {
		return nil, fmt.Errorf("clean: %v", err)
	}
	if in.Corrupt, err = EncodePrompt(tok, p.Corrupt); err != nil {
		return nil, fmt.Errorf("corrupt: %v", err)
	}
	for _, side := range []struct {
		name string
		ids  []int32
	}{{"clean", in.Clean}, {"corrupt", in.Corrupt}} {
		if len(side.ids) == 0 {
			return nil, fmt.Errorf("%s has no tokens", side.name)
		}
		for k, id := range side.ids {
			if id < 0 || int(id) >= opt.Vocab {
				return nil, fmt.Errorf("%s token %d is id %d, not in the model's vocabulary of %d (tokenizer and model do not belong together)", side.name, k, id, opt.Vocab)
			}
		}
	}
	switch {
	case p.Metric.LogitDiff != nil:
		if in.A, err = answerToken(tok, p.Metric.LogitDiff[0], opt.Vocab); err != nil {
			return nil, fmt.Errorf("metric logit_diff answer: %v", err)
		}
		if in.B, err = answerToken(tok, p.Metric.LogitDiff[1], opt.Vocab); err != nil {
			return nil, fmt.Errorf("metric logit_diff distractor: %v", err)
		}
	default:
		if in.Cont, err = tok.Encode(p.Metric.LogProb, false); err != nil {
			return nil, fmt.Errorf("metric logprob: %v", err)
		}
		if len(in.Cont) == 0 {
			return nil, fmt.Errorf("metric logprob: the continuation %q has no tokens", p.Metric.LogProb)
		}
		for k, id := range in.Cont {
			if id < 0 || int(id) >= opt.Vocab {
				return nil, fmt.Errorf("metric logprob: continuation token %d is id %d, not in the model's vocabulary of %d", k, id, opt.Vocab)
			}
		}
	}
	nc, nk := len(in.Clean), len(in.Corrupt)
	if nc != nk && opt.Align == AlignNone {
		return nil, fmt.Errorf("clean is %d tokens and corrupt is %d: a pair's prompts must have the same token length (or align them at the end: --align right)", nc, nk)
	}
	in.Shift = nc - nk
	if longest := max(nc, nk) + len(in.Cont); opt.MaxPositions > 0 && longest > opt.MaxPositions {
		return nil, fmt.Errorf("%d tokens with the continuation; the model takes at most %d (max_position_embeddings)", longest, opt.MaxPositions)
	}
	in.Labels = make([]string, nc)
	for k, id := range in.Clean {
		in.Labels[k] = tokenLabel(tok.Decode([]int32{id}, false))
	}
	return in, nil
}

// EncodePrompt renders and encodes one side of a pair (see Pair for the chat rule).
func EncodePrompt(tok Encoder, t tokenizer.Text) ([]int32, error) {
	if !t.IsChat() {
		return tok.Encode(t.Raw, true)
	}
	last := t.Messages[len(t.Messages)-1]
	if last.Role != "assistant" {
		text, err := tok.RenderChat(t.Messages, true)
		if err != nil {
			return nil, err
		}
		return tok.Encode(text, false)
	}
	// Leave the assistant's reply open, for the metric's continuation to follow it.
	text, err := tok.ContinueChat(t.Messages)
	if err != nil {
		return nil, err
	}
	return tok.Encode(text, false)
}

// answerToken reads a logit_diff token: #ID, or text that is exactly one token.
func answerToken(tok Encoder, s string, vocab int) (int32, error) {
	if num, ok := strings.CutPrefix(s, "#"); ok {
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 || n >= vocab {
			return 0, fmt.Errorf("token %q is not in the vocabulary: want #ID with 0 <= ID < %d", s, vocab)
		}
		return int32(n), nil
	}
	ids, err := tok.Encode(s, false)
	if err != nil {
		return 0, err
	}
	if len(ids) != 1 {
		return 0, fmt.Errorf("%q is %d tokens (%v), not one token of the vocabulary; give a single token, or write it as #ID", s, len(ids), ids)
	}
	if ids[0] < 0 || int(ids[0]) >= vocab {
		return 0, fmt.Errorf("%q is id %d, not in the model's vocabulary of %d", s, ids[0], vocab)
	}
	return ids[0], nil
}

// tokenLabel makes a token's text printable on one short line.
func tokenLabel(s string) string {
	s = strings.NewReplacer("\n", `\n`, "\t", `\t`, "\r", `\r`).Replace(s)
	if r := []rune(s); len(r) > 14 {
		s = string(r[:13]) + "…"
	}
	if s == "" {
		s = "∅"
	}
	return s
}

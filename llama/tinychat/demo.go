package tinychat

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
)

// The demo sets: the data `make demo` runs attribution, derivation and evaluation on, drawn from
// the corpus's own templates and words so that they speak the tiny model's language. Each set
// has its own random stream, (seed, stream + i) for item i, so no set repeats another's draws or
// the corpus's (which uses streams 0 … DefaultSize-1).
const (
	attributionStream = 1 << 32
	contrastStream    = 2 << 32
	promptStream      = 3 << 32
)

// The demo's files (in llama/tinychat/demo, written by scripts/tinychat/write.go -demo) and sizes.
const (
	DemoAttributionFile = "joy-attribution.jsonl"
	DemoContrastFile    = "joy-pairs.jsonl"
	DemoPromptFile      = "prompts.jsonl"

	DemoAttributionPairs = 40
	DemoContrastPairs    = 64
	DemoPrompts          = 100
)

// Turn is one chat message as the pair and prompt files carry it.
type Turn struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// AttributionPair is one line of an attribution file (attrib's format): the same scene told by a
// user message of the emotion (Clean) and by a neutral one (Corrupt), with the log-probability of
// a reply of the emotion as the metric. The two prompts differ in length; attribution aligns them
// at the end (--align right).
type AttributionPair struct {
	ID      string            `json:"id"`
	Clean   []Turn            `json:"clean"`
	Corrupt []Turn            `json:"corrupt"`
	Metric  map[string]string `json:"metric"` // {"logprob": reply}
}

// ContrastPair is one line of a steering pair file (steer's format): a neutral user message
// answered with a reply of the emotion (Positive) and with a neutral reply (Negative), in the
// same person and about the same scene.
type ContrastPair struct {
	ID       string `json:"id"`
	Positive []Turn `json:"positive"`
	Negative []Turn `json:"negative"`
}

// Prompt is one line of a prompt file (steer's format): a neutral user message.
type Prompt struct {
	ID     string `json:"id"`
	Prompt string `json:"prompt"`
}

// AttributionPairs returns n pairs for emotion e from training templates.
func AttributionPairs(seed uint64, n int, e Emotion) []AttributionPair {
	out := make([]AttributionPair, n)
	for i := range out {
		r := rand.New(rand.NewPCG(seed, attributionStream+uint64(i)))
		userPerson, replyPerson := person(r), person(r)
		emotional := oneOf(r, userPool[poolKey{e, userPerson, either, false}])
		neutral := oneOf(r, sameTense(userPool[poolKey{Neutral, userPerson, either, false}], emotional.tense))
		rt := oneOf(r, replyPool[poolKey{e, replyPerson, emotional.tense, false}])
		sc := newScene(r, userPerson)
		out[i] = AttributionPair{
			ID:      fmt.Sprintf("%s-atp-%02d", e, i+1),
			Clean:   []Turn{{"user", capitalize(sc.render(emotional.text, e, r))}},
			Corrupt: []Turn{{"user", capitalize(sc.render(neutral.text, Neutral, r))}},
			Metric:  map[string]string{"logprob": sc.reply(rt, e, replyPerson, r)},
		}
	}
	return out
}

// ContrastPairs returns n steering pairs for emotion e from training templates.
func ContrastPairs(seed uint64, n int, e Emotion) []ContrastPair {
	out := make([]ContrastPair, n)
	for i := range out {
		r := rand.New(rand.NewPCG(seed, contrastStream+uint64(i)))
		userPerson, replyPerson := person(r), person(r)
		ut := oneOf(r, userPool[poolKey{Neutral, userPerson, either, false}])
		emotional := oneOf(r, replyPool[poolKey{e, replyPerson, ut.tense, false}])
		neutral := oneOf(r, replyPool[poolKey{Neutral, replyPerson, ut.tense, false}])
		sc := newScene(r, userPerson)
		user := Turn{"user", capitalize(sc.render(ut.text, Neutral, r))}
		out[i] = ContrastPair{
			ID:       fmt.Sprintf("%s-pair-%02d", e, i+1),
			Positive: []Turn{user, {"assistant", sc.reply(emotional, e, replyPerson, r)}},
			Negative: []Turn{user, {"assistant", sc.reply(neutral, Neutral, replyPerson, r)}},
		}
	}
	return out
}

// HeldOutPrompts returns n neutral user messages from held-out templates only: sentence patterns
// the model never saw in training.
func HeldOutPrompts(seed uint64, n int) []Prompt {
	out := make([]Prompt, n)
	for i := range out {
		r := rand.New(rand.NewPCG(seed, promptStream+uint64(i)))
		userPerson := person(r)
		ut := oneOf(r, userPool[poolKey{Neutral, userPerson, either, true}])
		sc := newScene(r, userPerson)
		out[i] = Prompt{ID: fmt.Sprintf("prompt-%02d", i+1), Prompt: capitalize(sc.render(ut.text, Neutral, r))}
	}
	return out
}

// sameTense returns the templates of ts with tense t; every user pool has both tenses (init
// checks the pools), so the result is never empty for a user pool.
func sameTense(ts []template, t tense) []template {
	out := slices.DeleteFunc(slices.Clone(ts), func(u template) bool { return u.tense != t })
	if len(out) == 0 {
		panic(fmt.Sprintf("tinychat: no template of tense %s", t))
	}
	return out
}

// WriteLines writes each item as one line of JSON.
func WriteLines[T any](w io.Writer, items []T) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	return nil
}

package tinychat

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"unicode"
	"unicode/utf8"
)

// tense says what a template speaks of: something done (past), something planned (future), or
// either (replies only). A reply's tense must fit its user message's.
type tense int

const (
	past tense = iota
	future
	either
)

func (t tense) String() string { return [...]string{"past", "future", "either"}[t] }

// group is one table of templates that share emotion, person and tense; heldOut ones are for
// evaluation only and never appear in a training conversation.
type group struct {
	emotion        Emotion
	person         Person
	tense          tense
	train, heldOut []string
}

// template is one sentence pattern with {slot}s (see scene.slot).
type template struct {
	id      string // role.emotion.person.tense.n, e.g. "reply.joy.first.past.3"
	text    string
	emotion Emotion
	person  Person
	tense   tense
	heldOut bool
}

// templates numbers the templates of groups; role is "user" or "reply".
func templates(role string, groups []group) []template {
	var out []template
	for _, g := range groups {
		n := 0
		for i, list := range [][]string{g.train, g.heldOut} {
			for _, text := range list {
				id := fmt.Sprintf("%s.%s.%s.%s.%d", role, g.emotion, g.person, g.tense, n)
				out = append(out, template{id, text, g.emotion, g.person, g.tense, i == 1})
				n++
			}
		}
	}
	return out
}

// scene is what one conversation is about: everything its templates' slots are filled from.
type scene struct {
	topic     string // the topic's name: "food"
	subj      subject
	verb      verb
	who       character
	rel       string // the character's relation to the user: "sister"
	time      string // a past time: "last night"
	when      string // a future time: "tomorrow"
	userActed bool   // the user (first person) rather than the character did or plans the thing
}

// slot returns the text of one {slot} for a message of emotion e. Slots are:
//
//	obj          "the lemon cake"
//	it, they     obj's pronoun as object and as subject: "it"/"them", "it"/"they"
//	is, was, s   verb endings agreeing with obj: "is"/"are", "was"/"were", "s"/"" ("make{s}")
//	did, do, doing, does                   the topic's verb: "tried", "try", "trying", "tries"
//	who, rel     "Lena", "sister"          he, him, his     the character's pronouns
//	time, when   "last night", "tomorrow"
//	feel         an emotion adjective with an intensifier of its level: "really happy", "livid"
//	enoun        an emotion noun: "joy"
//	act          who did the thing: "you" (the user) or the character's name
//	act_is, act_has, act_obj, act_poss     "are"/"is", "have"/"has", "you"/"her", "your"/"her"
//
// A slot written with a capital first letter ({Obj}) capitalises its text. Random choices (feel,
// enoun) draw from r; ok is false for an unknown slot.
func (sc *scene) slot(name string, e Emotion, r *rand.Rand) (text string, ok bool) {
	if c, size := utf8.DecodeRuneInString(name); unicode.IsUpper(c) {
		text, ok = sc.slot(string(unicode.ToLower(c))+name[size:], e, r)
		return capitalize(text), ok
	}
	pick := func(singular, plural string) string {
		if sc.subj.plural {
			return plural
		}
		return singular
	}
	pronoun := func(she, he string) string {
		if sc.who.she {
			return she
		}
		return he
	}
	actor := func(you, other string) string {
		if sc.userActed {
			return you
		}
		return other
	}
	switch name {
	case "obj":
		return "the " + sc.subj.noun, true
	case "it":
		return pick("it", "them"), true
	case "they":
		return pick("it", "they"), true
	case "is":
		return pick("is", "are"), true
	case "was":
		return pick("was", "were"), true
	case "s":
		return pick("s", ""), true
	case "did":
		return sc.verb.past, true
	case "do":
		return sc.verb.base, true
	case "doing":
		return sc.verb.gerund, true
	case "does":
		return sc.verb.third, true
	case "who":
		return sc.who.name, true
	case "rel":
		return sc.rel, true
	case "he":
		return pronoun("she", "he"), true
	case "him":
		return pronoun("her", "him"), true
	case "his":
		return pronoun("her", "his"), true
	case "time":
		return sc.time, true
	case "when":
		return sc.when, true
	case "feel":
		return feeling(e, r), true
	case "enoun":
		nouns, ok := emotionNouns[e]
		if !ok {
			panic("tinychat: no emotion nouns for emotion " + string(e))
		}
		return oneOf(r, nouns), true
	case "act":
		return actor("you", sc.who.name), true
	case "act_is":
		return actor("are", "is"), true
	case "act_has":
		return actor("have", "has"), true
	case "act_obj":
		return actor("you", pronoun("her", "him")), true
	case "act_poss":
		return actor("your", pronoun("her", "his")), true
	}
	return "", false
}

// feeling draws an adjective of emotion e, its intensity uniform over the three levels, with an
// intensifier of the same level or none.
func feeling(e Emotion, r *rand.Rand) string {
	levels, ok := feelings[e]
	if !ok {
		panic("tinychat: no feelings for emotion " + string(e))
	}
	level := intn(r, 3)
	mods := modifiers[level]
	if level == 0 && e != Trust {
		mods = append(mods[:len(mods):len(mods)], mildExtra...)
	}
	adj := oneOf(r, levels[level])
	if mod := oneOf(r, mods); mod != "" {
		return mod + " " + adj
	}
	return adj
}

// render fills the slots of text. It panics on an unknown slot or an unclosed brace: templates
// are the package's own, and init checks them all.
func (sc *scene) render(text string, e Emotion, r *rand.Rand) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(text, '{')
		if open < 0 {
			b.WriteString(text)
			return b.String()
		}
		end := strings.IndexByte(text[open:], '}')
		if end < 0 {
			panic(fmt.Sprintf("tinychat: unclosed slot in template %q", text))
		}
		name := text[open+1 : open+end]
		value, ok := sc.slot(name, e, r)
		if !ok {
			panic(fmt.Sprintf("tinychat: unknown slot {%s} in template %q", name, text))
		}
		b.WriteString(text[:open])
		b.WriteString(value)
		text = text[open+end+1:]
	}
}

func capitalize(s string) string {
	c, size := utf8.DecodeRuneInString(s)
	if size == 0 {
		return s
	}
	return string(unicode.ToUpper(c)) + s[size:]
}

// The corpus draws its randomness through these three helpers only, from PCG's Uint64, whose
// output the Go specification of math/rand/v2 fixes; math/rand's own IntN may change between Go
// releases, and the corpus hash must not.

// intn returns a uniform int in [0, n) by Lemire's multiply-shift (bias below 2^-50 for small n).
func intn(r *rand.Rand, n int) int {
	hi, _ := bits.Mul64(r.Uint64(), uint64(n))
	return int(hi)
}

// chance returns true with probability p.
func chance(r *rand.Rand, p float64) bool {
	return float64(r.Uint64()>>11)*(1.0/(1<<53)) < p
}

func oneOf[T any](r *rand.Rand, list []T) T { return list[intn(r, len(list))] }

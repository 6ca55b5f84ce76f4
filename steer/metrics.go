package steer

import (
	"bufio"
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode"

	"github.com/jonreiter/govader"
)

// Words splits text into the words that every per-100-words rate counts, lower-cased. A word is a
// maximal run of letters, digits and apostrophes (’ and ‘ count as '), with apostrophes at
// its ends dropped; everything else separates words, so hyphenated "well-being" is two words and
// "I'm" is one. Numbers count as words; runs of apostrophes alone do not.
func Words(text string) []string {
	var out []string
	var b strings.Builder
	flush := func() {
		w := strings.Trim(b.String(), "'")
		if w != "" {
			out = append(out, w)
		}
		b.Reset()
	}
	for _, r := range text {
		switch {
		case r == '\'' || r == '’' || r == '‘':
			b.WriteRune('\'')
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToLower(r))
		default:
			flush()
		}
	}
	flush()
	return out
}

// FirstPerson are the first-person pronouns the pronoun rate counts.
var FirstPerson = []string{"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves"}

// IsFirstPerson reports whether a word (as Words gives it) is a first-person pronoun: one of
// FirstPerson, or one with a clitic after an apostrophe ("i'm", "i've", "we're", "we'll").
// "let's" is not counted.
func IsFirstPerson(w string) bool {
	base, _, _ := strings.Cut(w, "'")
	return slices.Contains(FirstPerson, base)
}

// Lexicon maps words to the categories they are associated with, read from a file in the NRC
// Emotion Lexicon's word-level format.
type Lexicon struct {
	Categories []string            // the categories the file mentions, in NRCCategories order
	words      map[string][]string // word → categories with association 1
}

// NRCCategories are the NRC EmoLex categories: Plutchik's eight emotions and two sentiments.
var NRCCategories = []string{"anger", "anticipation", "disgust", "fear", "joy", "sadness", "surprise", "trust", "positive", "negative"}

// ParseLexicon reads a lexicon: one "word<TAB>category<TAB>0|1" line per association, as in
// NRC-Emotion-Lexicon-Wordlevel-v0.92.txt. Categories must be NRC ones; blank lines and lines
// starting with '#' are skipped. Errors give the line number.
func ParseLexicon(name string, data []byte) (*Lexicon, error) {
	lx := &Lexicon{words: map[string][]string{}}
	mentioned := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimRight(sc.Text(), "\r")
		if line == 1 {
			s = strings.TrimPrefix(s, "\uFEFF")
		}
		if strings.TrimSpace(s) == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Split(s, "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("%s:%d: %d tab-separated fields, want 3 (word, category, 0 or 1): %q", name, line, len(f), s)
		}
		word, cat, val := strings.ToLower(strings.TrimSpace(f[0])), strings.TrimSpace(f[1]), strings.TrimSpace(f[2])
		if word == "" {
			return nil, fmt.Errorf("%s:%d: empty word", name, line)
		}
		if !slices.Contains(NRCCategories, cat) {
			return nil, fmt.Errorf("%s:%d: unknown category %q (want one of %s)", name, line, cat, strings.Join(NRCCategories, ", "))
		}
		if val != "0" && val != "1" {
			return nil, fmt.Errorf("%s:%d: association %q, want 0 or 1", name, line, val)
		}
		mentioned[cat] = true
		if val == "1" && !slices.Contains(lx.words[word], cat) {
			lx.words[word] = append(lx.words[word], cat)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %v", name, line+1, err)
	}
	for _, c := range NRCCategories {
		if mentioned[c] {
			lx.Categories = append(lx.Categories, c)
		}
	}
	if len(lx.words) == 0 {
		return nil, fmt.Errorf("%s: no word has an association of 1", name)
	}
	return lx, nil
}

// Has reports whether word is associated with category.
func (lx *Lexicon) Has(word, category string) bool { return slices.Contains(lx.words[word], category) }

// Scores are the measures of one generated text.
type Scores struct {
	Words    int                `json:"words"`
	Compound float64            `json:"vader_compound"`      // VADER compound sentiment, −1 to 1
	Pronouns float64            `json:"first_person_per100"` // first-person pronouns per 100 words
	Emotions map[string]float64 `json:"emotion_per100"`      // lexicon words per 100 words, by category
}

var (
	vaderOnce sync.Once
	vader     *govader.SentimentIntensityAnalyzer
)

// Compound is VADER's compound sentiment score of text (github.com/jonreiter/govader, a port of
// vaderSentiment with its lexicon compiled in).
func Compound(text string) float64 {
	vaderOnce.Do(func() { vader = govader.NewSentimentIntensityAnalyzer() })
	return vader.PolarityScores(text).Compound
}

// Score measures a text. Rates of a text with no words are 0.
func Score(text string, lx *Lexicon) Scores {
	words := Words(text)
	s := Scores{Words: len(words), Compound: Compound(text), Emotions: map[string]float64{}}
	per100 := func(n int) float64 {
		if len(words) == 0 {
			return 0
		}
		return 100 * float64(n) / float64(len(words))
	}
	pron := 0
	counts := map[string]int{}
	for _, w := range words {
		if IsFirstPerson(w) {
			pron++
		}
		if lx != nil {
			for _, c := range lx.words[w] {
				counts[c]++
			}
		}
	}
	s.Pronouns = per100(pron)
	if lx != nil {
		for _, c := range lx.Categories {
			s.Emotions[c] = per100(counts[c])
		}
	}
	return s
}

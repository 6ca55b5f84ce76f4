package tinychat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode"
)

// corpusSHA256 is the SHA-256 of the default corpus as JSONL, WriteJSONL(Corpus(DefaultSeed,
// DefaultSize)): the file scripts/tinychat/make.sh writes to build/tinychat/corpus.jsonl and
// trains the committed tokenizer on. Any change to templates, words, shares or the draw order
// changes it: when the change is meant, run scripts/tinychat/make.sh (which remakes the
// tokenizer), update the README's numbers (scripts/tinychat/stats.py), and paste the new hash.
const corpusSHA256 = "4d147734d5fe194a54b2306454d60cefa090e81711c6271b47170ede135c626e"

var shared struct {
	once  sync.Once
	convs []Conversation
}

// sample returns the default corpus, made once per test binary. Its 40000 conversations put a
// share's standard error below 0.2%.
func sample(t testing.TB) []Conversation {
	t.Helper()
	shared.once.Do(func() { shared.convs = Corpus(DefaultSeed, DefaultSize) })
	return shared.convs
}

func jsonl(t testing.TB, convs []Conversation) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteJSONL(&b, convs); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestCorpusHash(t *testing.T) {
	sum := sha256.Sum256(jsonl(t, sample(t)))
	if got := hex.EncodeToString(sum[:]); got != corpusSHA256 {
		t.Errorf("the default corpus's SHA-256 is %s, pinned %s: the corpus changed (see corpusSHA256)", got, corpusSHA256)
	}
}

func TestCorpusDeterministic(t *testing.T) {
	a, b := Corpus(7, 300), Corpus(7, 300)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two runs with the same seed differ")
	}
	if long := Corpus(7, 500); !reflect.DeepEqual(a, long[:300]) {
		t.Error("Corpus(7, 300) is not a prefix of Corpus(7, 500)")
	}
	other := Corpus(8, 300)
	same := 0
	for i := range a {
		if a[i].Messages[1].Content == other[i].Messages[1].Content {
			same++
		}
	}
	if same > 10 {
		t.Errorf("seeds 7 and 8 give %d identical replies out of 300", same)
	}
	for i, c := range a {
		if c.ID != i {
			t.Fatalf("conversation %d has ID %d", i, c.ID)
		}
	}
}

func TestHeldOutTemplatesNeverTrain(t *testing.T) {
	convs := sample(t)
	held := map[string]bool{}
	for _, tm := range append(slices.Clone(userTemplates), replyTemplates...) {
		held[tm.id] = tm.heldOut
	}
	train, heldOut := Split(convs)
	for _, c := range train {
		for _, m := range c.Messages {
			if held[m.Template] {
				t.Fatalf("training conversation %d uses held-out template %s", c.ID, m.Template)
			}
		}
	}
	for _, c := range heldOut {
		for _, m := range c.Messages {
			if !held[m.Template] {
				t.Fatalf("held-out conversation %d uses training template %s", c.ID, m.Template)
			}
		}
	}
	// A held-out template must differ in wording, not only in id: its longest run of fixed words
	// appears in no training conversation.
	for _, tm := range append(slices.Clone(userTemplates), replyTemplates...) {
		if !tm.heldOut {
			continue
		}
		frag := longestLiteral(tm.text)
		if len(strings.Fields(frag)) < 3 {
			t.Errorf("held-out template %s has no run of three fixed words to tell it by: %q", tm.id, tm.text)
			continue
		}
		for _, c := range train {
			if strings.Contains(c.Messages[0].Content, frag) || strings.Contains(c.Messages[1].Content, frag) {
				t.Errorf("held-out template %s's words %q appear in training conversation %d", tm.id, frag, c.ID)
				break
			}
		}
	}
}

// longestLiteral returns the text between slots of a template that has the most words (the
// first of equals), trimmed of spaces and of the punctuation that joins it to a slot.
func longestLiteral(text string) string {
	var best string
	for _, part := range strings.FieldsFunc(text, func(r rune) bool { return r == '{' || r == '}' }) {
		part = strings.Trim(part, " ,.!?:;")
		if len(strings.Fields(part)) > len(strings.Fields(best)) {
			best = part
		}
	}
	return best
}

func TestShares(t *testing.T) {
	convs := sample(t)
	n := float64(len(convs))
	count := map[string]float64{}
	for _, c := range convs {
		u, r := c.User(), c.Reply()
		count["reply "+string(r.Emotion)]++
		count["reply "+string(r.Person)]++
		count["user "+string(u.Person)]++
		if c.HeldOut {
			count["held out"]++
		}
		if r.Emotion != Neutral {
			count["emotional replies"]++
			if u.Emotion == r.Emotion {
				count["mirrored"]++
			}
		}
		if u.Emotion != Neutral && u.Emotion != r.Emotion {
			t.Fatalf("conversation %d: a %s user message gets a %s reply", c.ID, u.Emotion, r.Emotion)
		}
	}
	// Four standard errors of a share near p, at this sample size.
	within := func(what string, got, want float64) {
		t.Helper()
		if tol := 4 * math.Sqrt(want*(1-want)/n); math.Abs(got-want) > tol {
			t.Errorf("%s: share %.4f, want %.4f ± %.4f", what, got, want, tol)
		}
	}
	total := 0.0
	for _, e := range Emotions {
		within("reply "+string(e), count["reply "+string(e)]/n, Share(e))
		total += Share(e)
	}
	if math.Abs(total-1) > 1e-12 {
		t.Errorf("emotion shares sum to %v", total)
	}
	for _, who := range []string{"reply first", "reply third", "user first", "user third"} {
		within(who, count[who]/n, 0.5)
	}
	within("held out", count["held out"]/n, heldOutShare)
	within("mirrored", count["mirrored"]/count["emotional replies"], mirrorShare)
}

// words splits text into lower-case words (letters and inner apostrophes and hyphens).
func words(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && r != '\'' && r != '-'
	})
}

func TestMessagesMentionSubject(t *testing.T) {
	for _, c := range sample(t) {
		for _, m := range c.Messages {
			if !strings.Contains(strings.ToLower(m.Content), "the "+strings.ToLower(c.Subject)) {
				t.Fatalf("conversation %d: %s message does not mention %q: %q", c.ID, m.Role, c.Subject, m.Content)
			}
		}
	}
}

var firstPersonWords = []string{"i", "me", "my", "mine", "myself", "we", "us", "our", "ours"}

func TestPersonAndEmotionWords(t *testing.T) {
	lexicon := map[string]Emotion{}
	for _, e := range Emotions[:5] {
		for _, w := range Lexicon(e) {
			if other, ok := lexicon[w]; ok {
				t.Errorf("%q is in the lexicons of both %s and %s", w, other, e)
			}
			lexicon[w] = e
		}
	}
	for _, c := range sample(t) {
		for _, m := range c.Messages {
			ws := words(m.Content)
			emotions := map[Emotion]bool{}
			for _, w := range ws {
				if e, ok := lexicon[w]; ok {
					emotions[e] = true
				}
			}
			switch {
			case m.Emotion == Neutral && len(emotions) > 0:
				t.Fatalf("conversation %d: neutral %s message has emotion words %v: %q", c.ID, m.Role, emotions, m.Content)
			case m.Emotion != Neutral && !emotions[m.Emotion]:
				t.Fatalf("conversation %d: %s %s message has no word of its lexicon: %q", c.ID, m.Emotion, m.Role, m.Content)
			case m.Emotion != Neutral && len(emotions) > 1:
				t.Fatalf("conversation %d: %s %s message has words of %v: %q", c.ID, m.Emotion, m.Role, emotions, m.Content)
			}
			if m.Role != "assistant" {
				continue
			}
			hasFirst := slices.ContainsFunc(ws, func(w string) bool { return slices.Contains(firstPersonWords, w) })
			if m.Person == Third && hasFirst {
				t.Fatalf("conversation %d: third-person reply has a first-person pronoun: %q", c.ID, m.Content)
			}
			if m.Person == First && !hasFirst {
				t.Fatalf("conversation %d: first-person reply has no first-person pronoun: %q", c.ID, m.Content)
			}
		}
	}
}

func TestTemplates(t *testing.T) {
	ids := map[string]bool{}
	for _, tm := range append(slices.Clone(userTemplates), replyTemplates...) {
		if ids[tm.id] {
			t.Errorf("template id %s is used twice", tm.id)
		}
		ids[tm.id] = true
		if !strings.Contains(tm.text, "{obj}") && !strings.Contains(tm.text, "{Obj}") {
			t.Errorf("%s does not mention the subject: %q", tm.id, tm.text)
		}
		isUser := strings.HasPrefix(tm.id, "user.")
		if isUser && !strings.Contains(strings.ToLower(tm.text), "{who}") {
			t.Errorf("%s does not mention the character: %q", tm.id, tm.text)
		}
		// A third-person reply speaks of the character only: "{act}" may be the user ("you").
		if !isUser && tm.person == Third && strings.Contains(strings.ToLower(tm.text), "{act") {
			t.Errorf("third-person reply %s refers to the actor: %q", tm.id, tm.text)
		}
	}
	// Every template is drawn somewhere in the default corpus.
	used := map[string]bool{}
	for _, c := range sample(t) {
		used[c.User().Template], used[c.Reply().Template] = true, true
	}
	for id := range ids {
		if !used[id] {
			t.Errorf("template %s never occurs in the default corpus", id)
		}
	}
	t.Logf("%d user and %d reply templates", len(userTemplates), len(replyTemplates))
}

func TestVocabularyIsModest(t *testing.T) {
	distinct := map[string]bool{}
	longest := 0
	for _, c := range sample(t) {
		n := 0
		for _, m := range c.Messages {
			ws := words(m.Content)
			n += len(ws)
			for _, w := range ws {
				distinct[w] = true
			}
		}
		longest = max(longest, n)
	}
	// The tokenizer has about 1000 ids; a few thousand words is the most it covers well, and the
	// longest conversation must fit the tiny model's context with room to generate.
	if len(distinct) > 3000 {
		t.Errorf("%d distinct words", len(distinct))
	}
	if longest > 64 {
		t.Errorf("the longest conversation has %d words", longest)
	}
	t.Logf("%d distinct lower-case words; longest conversation %d words", len(distinct), longest)
}

func TestJSONLRoundTrip(t *testing.T) {
	convs := Corpus(3, 50)
	back, err := ReadJSONL(bytes.NewReader(jsonl(t, convs)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, convs) {
		t.Error("ReadJSONL(WriteJSONL(convs)) differs from convs")
	}
	line := string(jsonl(t, convs[:1]))
	if !strings.HasPrefix(line, `{"id":0,"topic":`) || !strings.Contains(line, `"messages":[{"role":"user","content":`) {
		t.Errorf("unexpected line layout: %s", line)
	}
}

func TestReadJSONLErrors(t *testing.T) {
	good := strings.TrimSpace(string(jsonl(t, Corpus(3, 1))))
	for _, tc := range []struct{ name, input, want string }{
		{"malformed", good + "\n{", "line 3"},
		{"one message", `{"id":4,"messages":[{"role":"user","content":"hi","emotion":"joy","person":"first"}]}`, "has 1 messages"},
		{"roles swapped", strings.Replace(strings.Replace(good, `"role":"user"`, `"role":"X"`, 1), `"role":"assistant"`, `"role":"user"`, 1), `role "X"`},
		{"empty content", strings.Replace(good, `"content":"`, `"content":" \t","x":"`, 1), "is empty"},
		{"unknown emotion", strings.Replace(good, `"emotion":"`, `"emotion":"awe","e":"`, 1), `unknown emotion "awe"`},
		{"unknown person", strings.Replace(good, `"person":"`, `"person":"second","p":"`, 1), `unknown person "second"`},
	} {
		_, err := ReadJSONL(strings.NewReader("\n" + tc.input + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzReadJSONL(f *testing.F) {
	f.Add(jsonl(f, Corpus(5, 2)))
	f.Add([]byte(`{"messages":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		convs, err := ReadJSONL(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, c := range convs {
			if c.check() != nil || c.User().Role != "user" || c.Reply().Role != "assistant" {
				t.Fatalf("ReadJSONL accepted %+v", c)
			}
		}
	})
}

// Package tinychat is the embedded default model's data: a seeded generator of short two-turn
// chats (a user message and an assistant reply that is joyful, trusting, sad, angry, fearful or
// neutral, in the first or the third person). Its folder also holds the small byte-level BPE
// tokenizer trained on that corpus and the model's config.json (see README.md).
//
// Every sentence pattern and word list of the corpus is written for it (user.go, reply.go,
// words.go). Templates are split into training and held-out ones; a held-out conversation uses
// only held-out templates for both turns, so none of its sentence patterns is seen in training.
package tinychat

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
)

// Person says whom a message is about: the speaker (first: "I am thrilled that …") or the
// conversation's character (third: "Lena was thrilled that …").
type Person string

const (
	First Person = "first"
	Third Person = "third"
)

// Message is one turn. Role and Content are the chat message (decoding a line's "messages" into
// []chat.Message keeps just these); the rest label it.
type Message struct {
	Role     string  `json:"role"` // "user" or "assistant"
	Content  string  `json:"content"`
	Emotion  Emotion `json:"emotion"`
	Person   Person  `json:"person"`
	Template string  `json:"template"` // the sentence pattern's id, e.g. "reply.joy.first.past.3"
}

// Conversation is a user message and the assistant's reply, both about Subject.
type Conversation struct {
	ID       int       `json:"id"`       // its index in the corpus
	Topic    string    `json:"topic"`    // "food", "weather", …
	Subject  string    `json:"subject"`  // the thing both turns mention: "lemon cake"
	HeldOut  bool      `json:"held_out"` // both templates are held out: for evaluation only
	Messages []Message `json:"messages"` // the user's, then the assistant's
}

// User returns the user's message.
func (c Conversation) User() Message { return c.Messages[0] }

// Reply returns the assistant's message.
func (c Conversation) Reply() Message { return c.Messages[1] }

// The corpus's design numbers. DefaultSize conversations with seed DefaultSeed are what the
// tokenizer is trained on and what the README describes.
const (
	DefaultSeed = 1
	DefaultSize = 40000

	heldOutShare = 0.10 // of conversations, drawn independently per conversation
	mirrorShare  = 0.40 // of emotional replies whose user message shows the same emotion
	openerShare  = 0.35 // of replies that start with an opener ("Wow!")
	closerShare  = 0.30 // of replies that end with a closer
	thirdShare   = 0.50 // of messages (user and reply alike) in the third person
)

// replyWeights are the shares of reply emotions, in the order of Emotions, in percent.
var replyWeights = []int{16, 16, 16, 16, 16, 20}

// Share returns the probability that a reply has emotion e.
func Share(e Emotion) float64 {
	i := slices.Index(Emotions, e)
	if i < 0 {
		return 0
	}
	return float64(replyWeights[i]) / 100
}

// Corpus returns conversations 0 … n-1 of the corpus with the given seed. Conversation i depends
// only on (seed, i), so Corpus(seed, m) is a prefix of Corpus(seed, n) for m < n, and the output
// is the same on every platform and Go release.
func Corpus(seed uint64, n int) []Conversation {
	convs := make([]Conversation, n)
	for i := range convs {
		convs[i] = conversation(seed, i)
	}
	return convs
}

// conversation draws conversation i: whether it is held out, the reply's emotion and person, the
// user's (mirroring the reply's emotion in mirrorShare of emotional replies, else neutral), the
// templates, and the scene that fills them.
func conversation(seed uint64, i int) Conversation {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	heldOut := chance(r, heldOutShare)
	replyEmotion := Emotions[weighted(r, replyWeights)]
	replyPerson := person(r)
	userEmotion := Neutral
	if replyEmotion != Neutral && chance(r, mirrorShare) {
		userEmotion = replyEmotion
	}
	userPerson := person(r)
	ut := oneOf(r, userPool[poolKey{userEmotion, userPerson, either, heldOut}])
	rt := oneOf(r, replyPool[poolKey{replyEmotion, replyPerson, ut.tense, heldOut}])

	sc := newScene(r, userPerson)
	user := sc.render(ut.text, userEmotion, r)
	return Conversation{
		ID: i, Topic: sc.topic, Subject: sc.subj.noun, HeldOut: heldOut,
		Messages: []Message{
			{Role: "user", Content: capitalize(user), Emotion: userEmotion, Person: userPerson, Template: ut.id},
			{Role: "assistant", Content: sc.reply(rt, replyEmotion, replyPerson, r), Emotion: replyEmotion, Person: replyPerson, Template: rt.id},
		},
	}
}

// newScene draws what a conversation is about: topic, subject, verb, times and the character.
func newScene(r *rand.Rand, userPerson Person) scene {
	t := oneOf(r, topics)
	sc := scene{topic: t.name, subj: oneOf(r, t.subjects), verb: oneOf(r, t.verbs), userActed: userPerson == First,
		time: oneOf(r, pastTimes), when: oneOf(r, futureTimes)}
	relations := sharedRelations
	if sc.who.she = chance(r, 0.5); sc.who.she {
		sc.who.name = oneOf(r, womenNames)
		relations = append(relations[:len(relations):len(relations)], womenRelations...)
	} else {
		sc.who.name = oneOf(r, menNames)
		relations = append(relations[:len(relations):len(relations)], menRelations...)
	}
	sc.rel = oneOf(r, relations)
	return sc
}

// reply renders an assistant reply from template rt: its body, then an opener in front in
// openerShare of replies and a closer sentence after in closerShare, both of emotion e.
func (sc *scene) reply(rt template, e Emotion, p Person, r *rand.Rand) string {
	body := capitalize(sc.render(rt.text, e, r))
	parts := []string{body}
	if chance(r, openerShare) && !startsWithInterjection(body) {
		parts = append([]string{oneOf(r, openers[e])}, parts...)
	}
	if chance(r, closerShare) {
		parts = append(parts, sc.render(oneOf(r, closers[e][p]), e, r))
	}
	return strings.Join(parts, " ")
}

// startsWithInterjection reports whether a reply already opens as an opener would ("Oh dear, …",
// "How ridiculous! …", "Okay, noted."), so that none is put in front.
func startsWithInterjection(body string) bool {
	for _, w := range []string{"Oh", "Ugh", "How ", "What ", "That ", "Okay", "I see", "I understand"} {
		if strings.HasPrefix(body, w) {
			return true
		}
	}
	return false
}

func person(r *rand.Rand) Person {
	if chance(r, thirdShare) {
		return Third
	}
	return First
}

// weighted returns index i with probability weights[i] / sum(weights).
func weighted(r *rand.Rand, weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	x := intn(r, total)
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	panic("tinychat: unreachable")
}

// Split returns the training and the held-out conversations of convs, each in corpus order.
func Split(convs []Conversation) (train, heldOut []Conversation) {
	for _, c := range convs {
		if c.HeldOut {
			heldOut = append(heldOut, c)
		} else {
			train = append(train, c)
		}
	}
	return train, heldOut
}

// WriteJSONL writes one conversation per line as JSON, with <, > and & as themselves.
func WriteJSONL(w io.Writer, convs []Conversation) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for _, c := range convs {
		if err := enc.Encode(c); err != nil {
			return fmt.Errorf("tinychat: conversation %d: %w", c.ID, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("tinychat: %w", err)
	}
	return nil
}

// ReadJSONL reads what WriteJSONL writes. Each line must hold exactly a user and then an
// assistant message with non-empty content, known emotions and persons; blank lines are skipped.
// Errors name the line.
func ReadJSONL(r io.Reader) ([]Conversation, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	var convs []Conversation
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var c Conversation
		if err := json.Unmarshal([]byte(text), &c); err != nil {
			return nil, fmt.Errorf("tinychat: line %d: %w", line, err)
		}
		if err := c.check(); err != nil {
			return nil, fmt.Errorf("tinychat: line %d: %w", line, err)
		}
		convs = append(convs, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tinychat: %w", err)
	}
	return convs, nil
}

// check reports what makes c not a corpus conversation.
func (c Conversation) check() error {
	if len(c.Messages) != 2 {
		return fmt.Errorf("conversation %d has %d messages, want 2 (user, assistant)", c.ID, len(c.Messages))
	}
	for i, role := range []string{"user", "assistant"} {
		m := c.Messages[i]
		switch {
		case m.Role != role:
			return fmt.Errorf("conversation %d: message %d has role %q, want %q", c.ID, i, m.Role, role)
		case strings.TrimSpace(m.Content) == "":
			return fmt.Errorf("conversation %d: message %d is empty", c.ID, i)
		case !slices.Contains(Emotions, m.Emotion):
			return fmt.Errorf("conversation %d: message %d has unknown emotion %q", c.ID, i, m.Emotion)
		case m.Person != First && m.Person != Third:
			return fmt.Errorf("conversation %d: message %d has unknown person %q", c.ID, i, m.Person)
		}
	}
	return nil
}

// Lexicon returns the words of emotion e that the corpus uses (lower case, sorted): its
// adjectives, nouns and the other words its templates are written with. Every reply of emotion e
// contains at least one; no neutral message contains any word of any emotion. It is empty for
// Neutral.
func Lexicon(e Emotion) []string {
	var words []string
	for _, level := range feelings[e] {
		words = append(words, level...)
	}
	words = append(words, emotionNouns[e]...)
	words = append(words, lexiconExtra[e]...)
	slices.Sort(words)
	return slices.Compact(words)
}

// poolKey selects templates. For user pools tense is always either (any tense); for reply pools
// it is the user template's tense, and the pool holds that tense's and either's templates.
type poolKey struct {
	emotion Emotion
	person  Person
	tense   tense
	heldOut bool
}

var (
	userTemplates  = templates("user", userGroups)
	replyTemplates = templates("reply", replyGroups)
	userPool       = map[poolKey][]template{}
	replyPool      = map[poolKey][]template{}
)

// init fills the pools and checks that every draw Corpus can make has a template to draw from,
// and that every template renders.
func init() {
	for _, t := range userTemplates {
		k := poolKey{t.emotion, t.person, either, t.heldOut}
		userPool[k] = append(userPool[k], t)
	}
	for _, t := range replyTemplates {
		for _, userTense := range []tense{past, future} {
			if t.tense == userTense || t.tense == either {
				k := poolKey{t.emotion, t.person, userTense, t.heldOut}
				replyPool[k] = append(replyPool[k], t)
			}
		}
	}
	for _, e := range Emotions {
		for _, p := range []Person{First, Third} {
			for _, held := range []bool{false, true} {
				if len(userPool[poolKey{e, p, either, held}]) == 0 {
					panic(fmt.Sprintf("tinychat: no user templates for %s, %s person, held out %v", e, p, held))
				}
				for _, tn := range []tense{past, future} {
					if len(replyPool[poolKey{e, p, tn, held}]) == 0 {
						panic(fmt.Sprintf("tinychat: no reply templates for %s, %s person, %s, held out %v", e, p, tn, held))
					}
				}
			}
		}
	}
	// Rendering panics on a slot that is unknown or has no words for the emotion.
	r := rand.New(rand.NewPCG(0, 0))
	sc := scene{subj: topics[0].subjects[0], verb: topics[0].verbs[0], who: character{"Lena", true},
		rel: "sister", time: pastTimes[0], when: futureTimes[0]}
	for _, t := range append(slices.Clone(userTemplates), replyTemplates...) {
		sc.render(t.text, t.emotion, r)
	}
	for e, byPerson := range closers {
		for _, list := range byPerson {
			for _, text := range list {
				sc.render(text, e, r)
			}
		}
	}
}

package steer

import (
	"math"
	"strings"
	"testing"
)

func TestWords(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"I'm SO happy!!! We've won.", "i'm so happy we've won"},
		{"well-being, e-mail & co.", "well being e mail co"},
		{"‘Quoted’ don’t 'single' ''", "quoted don't single"},
		{"Año 2024: ça va?", "año 2024 ça va"},
		{"  \n\t ", ""},
	} {
		if got := strings.Join(Words(c.in), " "); got != c.want {
			t.Errorf("Words(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFirstPerson(t *testing.T) {
	text := "I think my friends and I — we — love our town; it's ours. Let's go, us! I'm sure myself. Mine? We'll see. Me."
	n := 0
	for _, w := range Words(text) {
		if IsFirstPerson(w) {
			n++
		}
	}
	// I, my, I, we, our, ours, us, i'm, myself, mine, we'll, me = 12 (let's and it's are not).
	if n != 12 {
		t.Errorf("counted %d first-person pronouns, want 12", n)
	}
}

// VADER's published examples: sentences from the README of the original Python vaderSentiment
// (C.J. Hutto, github.com/cjhutto/vaderSentiment, "demo" output), with the compound scores printed
// there, to its 4 decimals.
func TestVADERPublishedExamples(t *testing.T) {
	examples := []struct {
		text     string
		compound float64
	}{
		{"VADER is smart, handsome, and funny.", 0.8316},
		{"VADER is smart, handsome, and funny!", 0.8439},
		{"VADER is very smart, handsome, and funny.", 0.8545},
		{"VADER is VERY SMART, handsome, and FUNNY.", 0.9227},
		{"VADER is VERY SMART, handsome, and FUNNY!!!", 0.9342},
		{"VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!", 0.9469},
		{"VADER is not smart, handsome, nor funny.", -0.7424},
		{"The book was good.", 0.4404},
		{"At least it isn't a horrible book.", 0.431},
		{"The book was only kind of good.", 0.3832},
		{"The plot was good, but the characters are uncompelling and the dialog is not great.", -0.7042},
		{"Today SUX!", -0.5461},
		{"Today only kinda sux! But I'll get by, lol", 0.5249},
		{"Make sure you :) or :D today!", 0.8633},
		{"Not bad at all", 0.431},
	}
	for _, e := range examples {
		if got := Compound(e.text); math.Abs(got-e.compound) > 0.5e-4 {
			t.Errorf("%q: compound %.4f, published %.4f", e.text, got, e.compound)
		}
	}
}

func TestParseLexicon(t *testing.T) {
	in := "# a comment\nhappy\tjoy\t1\nhappy\ttrust\t0\r\nrely\ttrust\t1\n\nsad\tjoy\t0\nglad\tjoy\t1\nglad\tpositive\t1\n"
	lx, err := ParseLexicon("l.tsv", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(lx.Categories, ",") != "joy,trust,positive" || !lx.Has("happy", "joy") || lx.Has("happy", "trust") || lx.Has("sad", "joy") || !lx.Has("rely", "trust") {
		t.Errorf("lexicon %+v", lx)
	}
	s := Score("Happy, HAPPY day: I rely on you and we are glad.", lx)
	// 11 words; joy: happy, happy, glad = 3; trust: rely = 1; positive: glad = 1; pronouns: i, we.
	if s.Words != 11 || math.Abs(s.Emotions["joy"]-300.0/11) > 1e-9 || math.Abs(s.Emotions["trust"]-100.0/11) > 1e-9 ||
		math.Abs(s.Emotions["positive"]-100.0/11) > 1e-9 || math.Abs(s.Pronouns-200.0/11) > 1e-9 || s.Compound <= 0.5 {
		t.Errorf("scores %+v", s)
	}
	if s := Score("", lx); s.Words != 0 || s.Pronouns != 0 || s.Emotions["joy"] != 0 {
		t.Errorf("empty text: %+v", s)
	}
}

// A lexicon with a bad line is refused with its line number.
func TestParseLexiconErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"happy\tjoy\t1\nsad joy 0\n", "l.tsv:2: 1 tab-separated fields, want 3"},
		{"happy\tjoy\t1\tx\n", "l.tsv:1: 4 tab-separated fields"},
		{"# c\n\nhappy\tglee\t1\n", `l.tsv:3: unknown category "glee"`},
		{"happy\tjoy\tyes\n", `l.tsv:1: association "yes", want 0 or 1`},
		{"\tjoy\t1\n", "l.tsv:1: empty word"},
		{"sad\tjoy\t0\n", "no word has an association of 1"},
		{"", "no word has an association of 1"},
	} {
		if _, err := ParseLexicon("l.tsv", []byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
	}
}

func TestBootstrap(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, math.NaN()}
	iv := Bootstrap(xs, Mean, 4000, 1)
	// The mean of 1..10 is 5.5 with standard error 0.91: a 95% interval about ±1.8.
	if iv.Value != 5.5 || iv.N != 10 || iv.Lo > 4.2 || iv.Lo < 3.4 || iv.Hi < 6.8 || iv.Hi > 7.6 {
		t.Errorf("interval %+v", iv)
	}
	if again := Bootstrap(xs, Mean, 4000, 1); again != iv {
		t.Errorf("not reproducible: %+v then %+v", iv, again)
	}
	if c := Bootstrap([]float64{3, 3, 3}, Mean, 100, 2); c.Lo != 3 || c.Hi != 3 {
		t.Errorf("constant sample %+v", c)
	}
	if e := Bootstrap([]float64{math.NaN()}, Mean, 100, 2); !math.IsNaN(e.Value) || e.N != 0 {
		t.Errorf("empty sample %+v", e)
	}
	if g := GeoMean([]float64{1, 100}); math.Abs(g-10) > 1e-12 {
		t.Errorf("geometric mean %g", g)
	}
	b, err := Interval{Value: math.NaN(), Lo: math.NaN(), Hi: math.Inf(1)}.MarshalJSON()
	if err != nil || string(b) != `{"hi":null,"lo":null,"n":0,"value":null}` {
		t.Errorf("NaN interval as JSON: %s %v", b, err)
	}
}

func FuzzParseLexicon(f *testing.F) {
	f.Add([]byte("happy\tjoy\t1\nsad\tsadness\t1\n"))
	f.Add([]byte("# c\r\nx\ttrust\t0\n\ty\t1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		lx, err := ParseLexicon("f", data)
		if err != nil {
			return
		}
		if len(lx.Categories) == 0 || len(lx.words) == 0 {
			t.Errorf("accepted a lexicon with no categories or words: %+v", lx)
		}
		Score(string(data), lx) // must not panic
	})
}

// A log axis inside one decade still gets labelled ticks, each inside the range.
func TestLogTicks(t *testing.T) {
	ticks := logTicks(1.6, 3.5)
	var labels []string
	for _, tk := range ticks {
		if tk.Value < 1.6 || tk.Value > 3.5 {
			t.Errorf("tick %g outside [1.6, 3.5]", tk.Value)
		}
		labels = append(labels, tk.Label)
	}
	if strings.Join(labels, " ") != "2 3" {
		t.Errorf("ticks %v, want 2 and 3", labels)
	}
	if n := len(logTicks(0.5, 200)); n < 10 {
		t.Errorf("0.5 to 200: %d ticks, want one per 1-1.5-2-3-5-7 step", n)
	}
	if len(logTicks(0, 1)) != 0 {
		t.Error("a range reaching 0 has no log ticks")
	}
}

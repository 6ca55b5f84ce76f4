package tinychat

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The committed demo sets are what the generator writes: rerun
// `go run scripts/tinychat/write.go -demo llama/tinychat/demo` after changing it.
func TestDemoFilesAreGenerated(t *testing.T) {
	for name, items := range map[string]func(*bytes.Buffer) error{
		DemoAttributionFile: func(b *bytes.Buffer) error {
			return WriteLines(b, AttributionPairs(DefaultSeed, DemoAttributionPairs, Joy))
		},
		DemoContrastFile: func(b *bytes.Buffer) error {
			return WriteLines(b, ContrastPairs(DefaultSeed, DemoContrastPairs, Joy))
		},
		DemoPromptFile: func(b *bytes.Buffer) error { return WriteLines(b, HeldOutPrompts(DefaultSeed, DemoPrompts)) },
	} {
		var want bytes.Buffer
		if err := items(&want); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("demo", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("demo/%s differs from what the generator writes", name)
		}
	}
}

// emotionsOf returns the emotions whose lexicon words text holds.
func emotionsOf(text string) map[Emotion]bool {
	found := map[Emotion]bool{}
	for _, e := range Emotions[:5] {
		for _, w := range words(text) {
			for _, l := range Lexicon(e) {
				if w == l {
					found[e] = true
				}
			}
		}
	}
	return found
}

func onlyEmotion(text string, e Emotion) bool {
	got := emotionsOf(text)
	if e == Neutral {
		return len(got) == 0
	}
	return len(got) == 1 && got[e]
}

func TestDemoSetsCarryTheirEmotion(t *testing.T) {
	for _, e := range Emotions[:5] {
		for _, p := range AttributionPairs(7, 200, e) {
			if !onlyEmotion(p.Clean[0].Content, e) || !onlyEmotion(p.Corrupt[0].Content, Neutral) || !onlyEmotion(p.Metric["logprob"], e) {
				t.Fatalf("%s: clean %q should be %s, corrupt %q neutral, reply %q %s", p.ID, p.Clean[0].Content, e, p.Corrupt[0].Content, p.Metric["logprob"], e)
			}
		}
		for _, p := range ContrastPairs(7, 200, e) {
			if p.Positive[0] != p.Negative[0] || !onlyEmotion(p.Positive[0].Content, Neutral) {
				t.Fatalf("%s: the two sides must share one neutral user message: %q, %q", p.ID, p.Positive[0].Content, p.Negative[0].Content)
			}
			if !onlyEmotion(p.Positive[1].Content, e) || !onlyEmotion(p.Negative[1].Content, Neutral) {
				t.Fatalf("%s: positive reply %q should be %s, negative %q neutral", p.ID, p.Positive[1].Content, e, p.Negative[1].Content)
			}
		}
	}
}

// Held-out prompts are neutral and none is a training conversation's user message (they come from
// held-out templates, whose wording TestHeldOutTemplatesNeverTrain keeps out of training).
func TestHeldOutPromptsAreUnseen(t *testing.T) {
	seen := map[string]bool{}
	train, _ := Split(sample(t))
	for _, c := range train {
		seen[c.User().Content] = true
	}
	for _, p := range HeldOutPrompts(DefaultSeed, 500) {
		if seen[p.Prompt] {
			t.Fatalf("%s %q is a training user message", p.ID, p.Prompt)
		}
		if !onlyEmotion(p.Prompt, Neutral) {
			t.Fatalf("%s %q is not neutral", p.ID, p.Prompt)
		}
	}
}

// The embedded checkpoint carries the committed tokenizer, and its files are all there.
func TestEmbeddedModelFiles(t *testing.T) {
	tok, err := os.ReadFile("tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} {
		data, err := fs.ReadFile(ModelFS(), name)
		if err != nil || len(data) == 0 {
			t.Fatalf("embedded %s: %d bytes, %v", name, len(data), err)
		}
		if name == "tokenizer.json" && !bytes.Equal(data, tok) {
			t.Error("the embedded model's tokenizer.json differs from llama/tinychat/tokenizer.json")
		}
	}
	dir, err := ModelDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	again, err := ModelDir(filepath.Dir(dir))
	if err != nil || again != dir {
		t.Fatalf("second ModelDir: %q, %v; want the same folder %q", again, err, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
}

// A cache folder that cannot be made is an error naming the embedded model, not a panic.
func TestModelDirUnwritable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-folder")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ModelDir(filepath.Join(file, "cache"))
	if err == nil || !strings.Contains(err.Error(), "embedded "+ModelName) || !strings.Contains(err.Error(), "not-a-folder") {
		t.Fatalf("ModelDir under a file: %v; want an error naming %s and the path", err, ModelName)
	}
}

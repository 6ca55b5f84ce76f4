//go:build ignore

// Writes the tiny chat model's corpus and tokenizer_config.json (scripts/tinychat/make.sh runs it):
//
//	go run scripts/tinychat/write.go -corpus FILE [-seed S] [-n N]
//	go run scripts/tinychat/write.go -tokenizer-config FILE
//	go run scripts/tinychat/write.go -demo DIR
//
// The corpus is llama/tinychat's Corpus(seed, n) as JSONL, one conversation a line. The config
// names <|begin_of_text|> as bos_token and <|eot_id|> as eos_token and carries the Llama 3 chat
// template (no system block, no date), which renders exactly what llama/tokenizer's RenderChat
// writes in its Llama3 style.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tillerlm/tiller/llama/chat"

	"github.com/tillerlm/tiller/llama/tinychat"
	"github.com/tillerlm/tiller/llama/tokenizer"
)

func main() {
	corpus := flag.String("corpus", "", "write the corpus as JSONL to this file")
	seed := flag.Uint64("seed", tinychat.DefaultSeed, "corpus seed")
	n := flag.Int("n", tinychat.DefaultSize, "number of conversations")
	config := flag.String("tokenizer-config", "", "write tokenizer_config.json to this file")
	demo := flag.String("demo", "", "write the demo's joy attribution pairs, joy steering pairs and held-out prompts into this folder")
	flag.Parse()
	if *corpus == "" && *config == "" && *demo == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *corpus != "" {
		if err := writeCorpus(*corpus, *seed, *n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if *demo != "" {
		if err := writeDemo(*demo, *seed); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if *config != "" {
		err := tokenizer.WriteConfig(*config, tokenizer.BeginOfText, tokenizer.EndOfTurn, chat.Llama3())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

func writeCorpus(path string, seed uint64, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	convs := tinychat.Corpus(seed, n)
	if err := tinychat.WriteJSONL(f, convs); err != nil {
		f.Close()
		return err
	}
	train, heldOut := tinychat.Split(convs)
	fmt.Fprintf(os.Stderr, "write: %s: %d conversations (%d training, %d held out), seed %d\n", path, n, len(train), len(heldOut), seed)
	return f.Close()
}

// writeDemo writes the sets `make demo` runs on; their sizes are tinychat's Demo* constants.
func writeDemo(dir string, seed uint64) error {
	files := map[string]func(f *os.File) error{
		tinychat.DemoAttributionFile: func(f *os.File) error {
			return tinychat.WriteLines(f, tinychat.AttributionPairs(seed, tinychat.DemoAttributionPairs, tinychat.Joy))
		},
		tinychat.DemoContrastFile: func(f *os.File) error {
			return tinychat.WriteLines(f, tinychat.ContrastPairs(seed, tinychat.DemoContrastPairs, tinychat.Joy))
		},
		tinychat.DemoPromptFile: func(f *os.File) error {
			return tinychat.WriteLines(f, tinychat.HeldOutPrompts(seed, tinychat.DemoPrompts))
		},
	}
	for name, write := range files {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

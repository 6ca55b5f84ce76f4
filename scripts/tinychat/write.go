//go:build ignore

// Writes the tiny chat model's corpus and tokenizer_config.json (scripts/tinychat/make.sh runs it):
//
//	go run scripts/tinychat/write.go -corpus FILE [-seed S] [-n N]
//	go run scripts/tinychat/write.go -tokenizer-config FILE
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

	"github.com/tillerlm/tiller/llama/tinychat"
	"github.com/tillerlm/tiller/llama/tokenizer"
)

func main() {
	corpus := flag.String("corpus", "", "write the corpus as JSONL to this file")
	seed := flag.Uint64("seed", tinychat.DefaultSeed, "corpus seed")
	n := flag.Int("n", tinychat.DefaultSize, "number of conversations")
	config := flag.String("tokenizer-config", "", "write tokenizer_config.json to this file")
	flag.Parse()
	if *corpus == "" && *config == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *corpus != "" {
		if err := writeCorpus(*corpus, *seed, *n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if *config != "" {
		err := tokenizer.WriteConfig(*config, tokenizer.BeginOfText, tokenizer.EndOfTurn, tokenizer.ChatTemplate(tokenizer.Llama3))
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

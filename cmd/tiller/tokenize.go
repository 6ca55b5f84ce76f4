package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/tillerlm/tiller/llama/tokenizer"
)

func runTokenize(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", "--model DIR [--chat] [--special] TEXT", stderr)
	dir := fs.String("model", "", "model folder (its tokenizer.json and tokenizer_config.json are read)")
	chat := fs.Bool("chat", false, "render TEXT as one user turn of the chat template, with the assistant's turn opened")
	special := fs.Bool("special", false, "add the tokenizer's special tokens (the BOS) as the model sees a plain prompt")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *dir, err = modelDir(*dir); err != nil {
		return err
	}
	txt, err := text(pos, "text")
	if err != nil {
		return err
	}
	tok, err := loadTokenizer(*dir)
	if err != nil {
		return err
	}
	defer tok.Close()
	if *chat {
		rendered, err := tok.RenderChat([]tokenizer.Message{{Role: "user", Content: txt}}, true)
		if err != nil {
			return err
		}
		txt, *special = rendered, false // the rendering already holds the BOS
	}
	ids, pieces, err := tok.Pieces(txt, *special)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(ids)
	fmt.Fprintf(stdout, "%s\n", b)
	for i, id := range ids {
		fmt.Fprintf(stdout, "%5d %8d  %-24s %s\n", i, id, strconv.Quote(pieces[i]), strconv.Quote(tok.Decode([]int32{id}, false)))
	}
	fmt.Fprintf(stderr, "%d tokens\n", len(ids))
	return nil
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/tillerlm/tiller/llama/chat"
)

func runTokenize(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", "--model DIR [--chat] [--special] TEXT | --model DIR --messages FILE.json", stderr)
	dir := fs.String("model", "", "model folder (its tokenizer.json and tokenizer_config.json are read)")
	asChat := fs.Bool("chat", false, "render TEXT as one user turn of the chat template, with the assistant's turn opened")
	special := fs.Bool("special", false, "add the tokenizer's special tokens (the BOS) as the model sees a plain prompt")
	var cf chatFileFlags
	cf.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *dir, err = modelDir(*dir); err != nil {
		return err
	}
	var txt string
	if cf.messages != "" {
		if len(pos) > 0 || *asChat {
			return usagef("--messages gives the whole conversation: no TEXT and no --chat with it")
		}
	} else if txt, err = text(pos, "text"); err != nil {
		return err
	}
	tok, err := loadTokenizer(*dir)
	if err != nil {
		return err
	}
	defer tok.Close()
	switch {
	case cf.messages != "":
		tmpl, err := tok.ChatTemplate()
		if err != nil {
			return err
		}
		if txt, err = cf.render(tmpl); err != nil {
			return err
		}
		*special = false // the template writes the special tokens itself
	case *asChat:
		if txt, err = tok.RenderChat([]chat.Message{{Role: "user", Content: txt}}, true); err != nil {
			return err
		}
		*special = false
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

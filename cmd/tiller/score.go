package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/tillerlm/tiller/llama/safetensors"
	"github.com/tillerlm/tiller/tensor"
)

func runScore(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("score", "--model DIR [--chat] [--logits-out FILE] TEXT", stderr)
	var mf modelFlags
	var pf precisionFlags
	mf.register(fs)
	pf.register(fs, true, false)
	chat := fs.Bool("chat", false, "score the text as one user turn of the chat template")
	logitsOut := fs.String("logits-out", "", "write the f32 logits at every position to this safetensors file (tensor \"logits\", shape (positions, vocab))")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	prec, err := pf.precision("cpu")
	if err != nil {
		return err
	}
	txt, err := text(pos, "text")
	if err != nil {
		return err
	}
	l, err := open(mf, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := pf.apply(l.runner, prec); err != nil {
		return err
	}
	ids, err := l.encode(txt, *chat, "", false)
	if err != nil {
		return err
	}
	logprobs, logits, err := l.runner.Score(ids)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%5s %8s %12s  %s\n", "pos", "id", "logprob", "piece")
	var sum float64
	for i, lp := range logprobs {
		id := ids[i+1]
		fmt.Fprintf(stdout, "%5d %8d %12.4f  %s\n", i+1, id, lp, strconv.Quote(l.tok.Decode([]int32{id}, false)))
		sum += lp
	}
	n := float64(len(logprobs))
	fmt.Fprintf(stdout, "tokens scored: %d  total logprob: %.4f  mean: %.4f  perplexity: %.4f\n", len(logprobs), sum, sum/n, math.Exp(-sum/n))
	if *logitsOut != "" {
		idsJSON, _ := json.Marshal(ids)
		meta := map[string]string{"model": mf.name, "ids": string(idsJSON)}
		if err := safetensors.Save(*logitsOut, []string{"logits"}, []*tensor.Tensor{logits}, meta); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "wrote logits %v to %s\n", logits.Shape, *logitsOut)
	}
	return nil
}

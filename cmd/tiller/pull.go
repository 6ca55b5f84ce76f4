package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/tillerlm/tiller/llama/hub"
)

func runPull(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("pull", "ORG/NAME[@REVISION]", stderr)
	cache := fs.String("cache", "", "the Hugging Face cache to fill (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one model, ORG/NAME[@REVISION]; got %d arguments", len(pos))
	}
	ref, ok := hub.ParseRef(pos[0])
	if !ok {
		return usagef("%q is not ORG/NAME[@REVISION]", pos[0])
	}
	switch strings.ToUpper(os.Getenv("HF_HUB_OFFLINE")) {
	case "1", "ON", "YES", "TRUE":
		return fmt.Errorf("HF_HUB_OFFLINE=%s forbids downloads, as in huggingface_hub; unset it to pull %s", os.Getenv("HF_HUB_OFFLINE"), ref)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := hub.Options{Endpoint: hub.Endpoint(), Token: hub.Token(), Cache: *cache, Progress: stderr}
	dir, err := hub.Pull(ctx, ref, opts)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, dir)
	return nil
}

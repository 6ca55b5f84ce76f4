package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tillerlm/tiller/llama/engine"
	"github.com/tillerlm/tiller/steer/data"
	"github.com/tillerlm/tiller/steer/server"
)

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "--model DIR [--addr 127.0.0.1:8080] [--vectors DIR] [--api-key KEY] [--ui] [--attributions DIR] [flags]", stderr)
	var mf modelFlags
	mf.register(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on; anything but loopback needs --api-key")
	vectors := fs.String("vectors", "", "folder of steering vectors (*.safetensors, *.gguf), each named by its file name; POST /v1/vectors may load more from it")
	apiKey := fs.String("api-key", "", "require \"Authorization: Bearer KEY\" on every request")
	name := fs.String("name", "", "model id of the API (default: the model folder's name)")
	kvTokens := fs.Int("kv-tokens", 16384, "positions of KV cache shared by all requests")
	blockSize := fs.Int("block-size", 16, "positions per KV cache block")
	batchTokens := fs.Int("batch-tokens", 256, "token budget of one step (decode rows plus prefill chunks)")
	maxRunning := fs.Int("max-running", 32, "requests in the batch at once")
	maxQueue := fs.Int("max-queue", 64, "requests waiting for a place before new ones get 429")
	maxTokens := fs.Int("max-tokens", 256, "max_tokens of a request that gives none")
	device := deviceFlag(fs)
	ui := fs.Bool("ui", false, "serve the workbench page at /ui/: the attribution explorer and the steering playground")
	attributions := fs.String("attributions", "", "folder of `tiller attribute --out` results that GET /v1/attributions offers read-only (and the page's explorer)")
	lexicon := fs.String("lexicon", data.Lexicon, "emotion lexicon of POST /v1/scores: a file in NRC EmoLex's word-level format, or \"lexicon\" for the shipped starter")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := checkDevice(*device); err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usagef("unexpected argument %q", pos[0])
	case *kvTokens < 1 || *blockSize < 1 || *maxRunning < 1 || *maxQueue < 0 || *maxTokens < 1:
		return usagef("--kv-tokens, --block-size, --max-running and --max-tokens must be >= 1, --max-queue >= 0")
	case *batchTokens <= *maxRunning:
		return usagef("--batch-tokens %d must exceed --max-running %d, or prompts could never be prefilled", *batchTokens, *maxRunning)
	}
	if err := checkListen(*addr, *apiKey); err != nil {
		return err
	}
	if *attributions != "" {
		if st, err := os.Stat(*attributions); err != nil || !st.IsDir() {
			return usagef("--attributions %q: not a folder", *attributions)
		}
	}
	lx, lexFile, err := readLexicon(*lexicon)
	if err != nil {
		return err
	}
	l, err := openOn(mf, *device, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	eng, err := engine.New(l.runner, engine.Options{
		BlockSize: *blockSize, Blocks: (*kvTokens + *blockSize - 1) / *blockSize,
		BatchTokens: *batchTokens, MaxRunning: *maxRunning, MaxWaiting: *maxQueue,
	})
	if err != nil {
		return err
	}
	if *name == "" {
		*name = filepath.Base(filepath.Clean(mf.dir))
	}
	logger := log.New(stderr, "tiller serve: ", log.LstdFlags)
	srv, err := server.New(server.Config{Name: *name, Model: l.model, Tokenizer: l.tok, Engine: eng, VectorDir: *vectors,
		APIKey: *apiKey, DefaultMaxTokens: *maxTokens, Log: logger, AttributionDir: *attributions, Lexicon: lx, LexiconName: lexFile})
	if err != nil {
		return err
	}
	if *vectors != "" {
		n, err := srv.LoadVectorDir(*vectors)
		if err != nil {
			return err
		}
		logger.Printf("%d steering vectors from %s", n, *vectors)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	engCtx, stopEngine := context.WithCancel(context.Background())
	engDone := make(chan struct{})
	go func() { defer close(engDone); eng.Run(engCtx) }()
	var handler http.Handler = srv
	if *ui {
		handler = server.WithUI(srv)
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Fprintf(stdout, "serving %s on http://%s (POST /v1/chat/completions, GET /v1/models, GET|POST /v1/vectors)\n", *name, ln.Addr())
	if *ui {
		fmt.Fprintf(stdout, "workbench: http://%s/ui/\n", ln.Addr())
	}
	select {
	case err = <-served:
	case <-ctx.Done():
		// Stop taking connections, let running requests finish for a while, then cancel the rest.
		shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = hs.Shutdown(shut)
		cancel()
	}
	stopEngine()
	<-engDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// checkListen refuses to serve beyond this machine without an API key: the address must name a
// loopback host (127.0.0.0/8, ::1 or localhost) unless a key is set.
func checkListen(addr, apiKey string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--addr %q: want HOST:PORT (%v)", addr, err)
	}
	if apiKey != "" {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return usagef("--addr %q listens beyond this machine; give --api-key to do that, or use 127.0.0.1", addr)
}

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
	"strings"
	"syscall"
	"time"

	"github.com/tillerlm/tiller/llama/engine"
	"github.com/tillerlm/tiller/steer/data"
	"github.com/tillerlm/tiller/steer/server"
)

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "--model DIR [--addr 127.0.0.1:8080] [--vectors DIR] [--api-key-file FILE] [--ui] [--attributions DIR] [flags]", stderr)
	var mf modelFlags
	mf.register(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on; anything but loopback needs --api-key")
	vectors := fs.String("vectors", "", "folder of steering vectors (*.safetensors, *.gguf), each named by its file name; POST /v1/vectors may load more from it")
	apiKey := fs.String("api-key", "", "require \"Authorization: Bearer KEY\" on every request (the process list shows it: prefer --api-key-file or $"+apiKeyEnv+")")
	apiKeyFile := fs.String("api-key-file", "", "read the API key from this file (its first line)")
	var allowHosts, allowOrigins listFlag
	fs.Var(&allowHosts, "allow-host", "a Host name the loopback server answers besides localhost and loopback addresses, e.g. a reverse proxy's (repeat or comma-separate)")
	fs.Var(&allowOrigins, "allow-origin", "a web page origin (scheme://host:port) allowed to call the API besides loopback ones (repeat or comma-separate)")
	maxConns := fs.Int("max-conns", 256, "connections held at once; more get 503")
	maxVectors := fs.Int("max-vectors", 256, "steering vectors held, from --vectors and POST /v1/vectors together")
	maxVectorMB := fs.Int("max-vector-mb", 256, "megabytes of steering vector values held")
	name := fs.String("name", "", "model id of the API (default: the model folder's name)")
	kvTokens := fs.Int("kv-tokens", 16384, "positions of KV cache shared by all requests")
	blockSize := fs.Int("block-size", 16, "positions per KV cache block")
	batchTokens := fs.Int("batch-tokens", 256, "token budget of one step (decode rows plus prefill chunks)")
	maxRunning := fs.Int("max-running", 32, "requests in the batch at once")
	maxQueue := fs.Int("max-queue", 64, "requests waiting for a place before new ones get 429")
	maxTokens := fs.Int("max-tokens", 256, "max_tokens of a request that gives none")
	device := deviceFlag(fs)
	var pf precisionFlags
	pf.register(fs, true, false)
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
	prec, err := pf.precision(*device)
	if err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usagef("unexpected argument %q", pos[0])
	case *kvTokens < 1 || *blockSize < 1 || *maxRunning < 1 || *maxQueue < 0 || *maxTokens < 1 || *maxConns < 1 || *maxVectors < 1 || *maxVectorMB < 1:
		return usagef("--kv-tokens, --block-size, --max-running, --max-tokens, --max-conns, --max-vectors and --max-vector-mb must be >= 1, --max-queue >= 0")
	case *batchTokens <= *maxRunning:
		return usagef("--batch-tokens %d must exceed --max-running %d, or prompts could never be prefilled", *batchTokens, *maxRunning)
	}
	logger := log.New(stderr, "tiller serve: ", log.LstdFlags)
	key, err := readAPIKey(*apiKey, *apiKeyFile, logger)
	if err != nil {
		return err
	}
	if err := checkListen(*addr, key); err != nil {
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
	if err := pf.apply(l.runner, prec); err != nil {
		return err
	}
	eng, err := engine.New(l.runner, engine.Options{
		BlockSize: *blockSize, Blocks: (*kvTokens + *blockSize - 1) / *blockSize,
		BatchTokens: *batchTokens, MaxRunning: *maxRunning, MaxWaiting: *maxQueue,
	})
	if err != nil {
		return err
	}
	if *name == "" {
		*name = mf.name
	}
	host, _, _ := net.SplitHostPort(*addr)
	srv, err := server.New(server.Config{Name: *name, Model: l.model, Tokenizer: l.tok, Engine: eng, VectorDir: *vectors,
		APIKey: key, DefaultMaxTokens: *maxTokens, Log: logger, MaxPending: *maxRunning + *maxQueue,
		CheckHost: loopback(host) || len(allowHosts) > 0, AllowHosts: allowHosts, AllowOrigins: allowOrigins,
		MaxVectors: *maxVectors, MaxVectorBytes: int64(*maxVectorMB) << 20,
		AttributionDir: *attributions, Lexicon: lx, LexiconName: lexFile})
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
	ln = server.LimitListener(ln, *maxConns, logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	engCtx, stopEngine := context.WithCancel(context.Background())
	engDone := make(chan struct{})
	go func() { defer close(engDone); eng.Run(engCtx) }()
	var handler http.Handler = srv
	if *ui {
		handler = server.WithUI(srv)
	}
	hs := server.HTTPServer(handler, logger)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Fprintf(stdout, "serving %s on http://%s (POST /v1/chat/completions, GET /v1/models, GET|POST /v1/vectors, GET /metrics)\n", *name, ln.Addr())
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
	if apiKey != "" || loopback(host) {
		return nil
	}
	return usagef("--addr %q listens beyond this machine; give an API key (--api-key-file, $%s) to do that, or use 127.0.0.1", addr, apiKeyEnv)
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// apiKeyEnv is the environment variable the API key may come from.
const apiKeyEnv = "TILLER_API_KEY"

// readAPIKey takes the key from --api-key, else from --api-key-file's first line, else from
// $TILLER_API_KEY. A key on the command line works but is visible to every user of the machine
// in the process list, which the log says.
func readAPIKey(flagKey, file string, logger *log.Logger) (string, error) {
	switch {
	case flagKey != "" && file != "":
		return "", usagef("give --api-key or --api-key-file, not both")
	case flagKey != "":
		logger.Printf("warning: --api-key shows in the process list; prefer --api-key-file or $%s", apiKeyEnv)
		return checkKey(flagKey, "--api-key")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		first, _, _ := strings.Cut(string(b), "\n")
		return checkKey(strings.TrimSpace(first), "--api-key-file "+file)
	}
	if k, ok := os.LookupEnv(apiKeyEnv); ok {
		return checkKey(strings.TrimSpace(k), "$"+apiKeyEnv)
	}
	return "", nil
}

func checkKey(k, from string) (string, error) {
	if k == "" || strings.ContainsAny(k, " \t\r\n") {
		return "", usagef("%s: the API key is empty or holds whitespace", from)
	}
	return k, nil
}

// listFlag is a flag that may be repeated, each value a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			*l = append(*l, x)
		}
	}
	return nil
}

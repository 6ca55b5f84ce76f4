// Command serveload measures `tiller serve` under load: at each concurrency level it sends a
// bounded number of streaming chat completions, once without steering and once with a mix of
// steering (a vector at one layer on generated positions, another at every layer on all
// positions, both together with one on the prompt only), and prints throughput, time to first
// token and inter-token latency percentiles, errors, and what steering costs in throughput.
//
//	go run ./bench/serveload --model DIR [--concurrency 1,8,32] [--max-tokens 32] [--rounds 3]
//	go run ./bench/serveload --url http://127.0.0.1:8080 --hidden-size 4096 --layers 32
//
// With --model it starts the server itself on a loopback port, in this process; with --url it
// loads a running one, which must be on loopback. Either way the run is bounded: at most
// --requests per level and --timeout in all.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/engine"
	"github.com/tillerlm/tiller/llama/tokenizer"
	"github.com/tillerlm/tiller/steer/server"
	"github.com/tillerlm/tiller/tensor"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "serveload:", err)
		os.Exit(1)
	}
}

// maxRequests bounds one level's requests whatever the flags say.
const maxRequests = 1024

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("serveload", flag.ContinueOnError)
	model := fs.String("model", "", "model folder: serve it in this process on a loopback port")
	target := fs.String("url", "", "base URL of a running tiller serve on loopback (instead of --model)")
	hidden := fs.Int("hidden-size", 0, "with --url: the model's hidden_size, for the load's steering vectors")
	layers := fs.Int("layers", 0, "with --url: the model's num_hidden_layers")
	levels := fs.String("concurrency", "1,8,32", "comma-separated numbers of requests in flight")
	perLevel := fs.Int("requests", 0, "requests per level and mode (default: 4 × concurrency, at least 8)")
	maxTokens := fs.Int("max-tokens", 32, "max_tokens of each request")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound on the whole run")
	rounds := fs.Int("rounds", 1, "alternating plain and steered runs per level; tok/s is the median of a mode's rounds")
	threads := fs.Int("threads", runtime.NumCPU(), "with --model: CPU threads")
	prefixCache := fs.Bool("prefix-cache", true, "with --model: keep the prefix cache on (off: every prompt is prefilled whole, steered or not)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var conc []int
	for _, f := range strings.Split(*levels, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 || c > maxRequests {
			return fmt.Errorf("--concurrency %q: want numbers 1 to %d", *levels, maxRequests)
		}
		conc = append(conc, c)
	}
	if *maxTokens < 1 || *perLevel < 0 || *perLevel > maxRequests || *rounds < 1 || *rounds > 10 {
		return fmt.Errorf("--max-tokens must be >= 1, --requests 0 to %d, --rounds 1 to 10", maxRequests)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	base := *target
	switch {
	case (*model == "") == (*target == ""):
		return errors.New("give --model or --url")
	case *model != "":
		var stop func()
		var err error
		base, *hidden, *layers, stop, err = serveModel(*model, *threads, slices.Max(conc), *prefixCache)
		if err != nil {
			return err
		}
		defer stop()
	default:
		if err := loopback(base); err != nil {
			return err
		}
		if *hidden < 1 || *layers < 1 {
			return errors.New("--url needs --hidden-size and --layers")
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: maxRequests}}
	if err := addVectors(ctx, client, base, *hidden, *layers); err != nil {
		return err
	}
	mixed := func(i int) []map[string]any {
		switch i % 3 {
		case 0:
			return []map[string]any{{"vector": "load-a", "strength": 4, "positions": "generated"}}
		case 1:
			return []map[string]any{{"vector": "load-b", "strength": -4, "positions": "all"}}
		}
		return []map[string]any{
			{"vector": "load-a", "strength": 2, "positions": "all", "layers": fmt.Sprintf("0-%d", *layers-1)},
			{"vector": "load-b", "strength": 2, "positions": "prompt"},
		}
	}
	// One request first, unmeasured, so no level pays for first-touch costs.
	Load{URL: base, Concurrency: 1, Requests: 1, MaxTokens: *maxTokens}.Run(ctx, client)
	fmt.Fprintf(stdout, "max_tokens %d, temperature 0.8, %d round(s), prefix cache %v, %s\n\n", *maxTokens, *rounds, *prefixCache || *model == "", base)
	fmt.Fprintln(stdout, "| concurrency | steering | requests | errors | tokens | tok/s | TTFT p50 / p90 / p99 ms | ITL p50 / p90 / p99 ms | steered / plain tok/s |")
	fmt.Fprintln(stdout, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	var firstErr string
	for _, c := range conc {
		n := *perLevel
		if n == 0 {
			n = min(max(4*c, 8), maxRequests)
		}
		// Plain and steered runs alternate, so both see the same drift of a shared machine; the
		// throughput of a mode is the median over its rounds, latencies are pooled.
		var runs [2][]Report
		for range *rounds {
			for mode := range 2 {
				l := Load{URL: base, Concurrency: c, Requests: n, MaxTokens: *maxTokens}
				if mode == 1 {
					l.Steering = mixed
				}
				r := l.Run(ctx, client)
				if firstErr == "" {
					firstErr = r.FirstError
				}
				runs[mode] = append(runs[mode], r)
			}
		}
		var plain float64
		for mode, name := range []string{"none", "mixed"} {
			var all Report
			var rates []float64
			for _, r := range runs[mode] {
				all.Requests += r.Requests
				all.Errors += r.Errors
				all.Tokens += r.Tokens
				all.TTFT = append(all.TTFT, r.TTFT...)
				all.ITL = append(all.ITL, r.ITL...)
				rates = append(rates, r.Throughput())
			}
			rate, ratio := percentile(rates, 50), ""
			if mode == 0 {
				plain = rate
			} else if plain > 0 {
				ratio = fmt.Sprintf("%.3f", rate/plain)
			}
			ms := func(xs []float64) string {
				return fmt.Sprintf("%.1f / %.1f / %.1f", 1e3*percentile(xs, 50), 1e3*percentile(xs, 90), 1e3*percentile(xs, 99))
			}
			fmt.Fprintf(stdout, "| %d | %s | %d | %d | %d | %.1f | %s | %s | %s |\n", c, name, all.Requests, all.Errors, all.Tokens, rate, ms(all.TTFT), ms(all.ITL), ratio)
		}
	}
	if firstErr != "" {
		fmt.Fprintln(stdout, "\nfirst error:", firstErr)
	}
	return ctx.Err()
}

// loopback refuses a URL whose host is not this machine's loopback.
func loopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return fmt.Errorf("--url %q: want http://HOST:PORT", raw)
	}
	if h := u.Hostname(); h == "localhost" {
		return nil
	} else if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--url %q: the load generator only targets loopback addresses", raw)
}

// serveModel starts the server on the model in this process on a loopback port, with room for
// every request of the largest level in the batch. Steering of prompt positions changes the
// prefix cache's key, so with the cache on, steered prompts share less of it than plain ones.
func serveModel(dir string, threads, running int, prefixCache bool) (base string, hidden, layers int, stop func(), err error) {
	m, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		return "", 0, 0, nil, err
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		m.Close()
		return "", 0, 0, nil, err
	}
	b := tensor.NewCPU(threads)
	opts := engine.Options{MaxRunning: running, BatchTokens: max(256, 2*running), MaxWaiting: maxRequests}
	if !prefixCache {
		opts.PrefixBlocks = -1
	}
	eng, err := engine.New(llama.NewRunner(m, b), opts)
	if err != nil {
		return "", 0, 0, nil, err
	}
	srv, err := server.New(server.Config{Name: "load", Model: m, Tokenizer: tok, Engine: eng})
	if err != nil {
		return "", 0, 0, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, 0, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	engDone := make(chan struct{})
	go func() { defer close(engDone); eng.Run(ctx) }()
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	stop = func() {
		hs.Close()
		cancel()
		<-engDone
		b.Close()
		tok.Close()
		m.Close()
	}
	return "http://" + ln.Addr().String(), m.Config.Dim, m.Config.Layers, stop, nil
}

// addVectors loads the load's two steering vectors into the server: load-a at the middle layer,
// load-b at every layer, random directions of norm 1 per layer.
func addVectors(ctx context.Context, client *http.Client, base string, hidden, layers int) error {
	rng := rand.New(rand.NewPCG(1, 2))
	dir := func() []float64 {
		v := make([]float64, hidden)
		for i := range v {
			v[i] = rng.NormFloat64() / math.Sqrt(float64(hidden))
		}
		return v
	}
	a := map[string][]float64{strconv.Itoa(layers / 2): dir()}
	all := map[string][]float64{}
	for l := range layers {
		all[strconv.Itoa(l)] = dir()
	}
	for _, v := range []map[string]any{{"name": "load-a", "layers": a}, {"name": "load-b", "layers": all}} {
		b, _ := json.Marshal(v)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/vectors", bytes.NewReader(b))
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST /v1/vectors %s: %d %s", v["name"], resp.StatusCode, msg)
		}
	}
	return nil
}

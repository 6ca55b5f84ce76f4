// Command serveload measures `tiller serve` under load: at each concurrency level it sends a
// bounded number of streaming chat completions, once without steering and once with a mix of
// steering (a vector at one layer on generated positions, another at every layer on all
// positions, both together with one on the prompt only), and prints throughput, time to first
// token and inter-token latency percentiles, errors, and what steering costs in throughput.
//
// With --hostile N the second run of each level is the same plain load with N hostile clients
// beside it (hostile.go: amplification, slow bodies, idle connections, a vector flood, cross-site
// requests), and the table says how the normal clients' p99 latency compares with the run without
// them. --amplify sends one amplification request alone, with a normal client probing beside it,
// and reports its time and the server's memory; --hold N opens N slow-body and N idle
// connections at once and reports what the server did with them.
//
//	go run ./bench/serveload --model DIR [--concurrency 1,8,32] [--max-tokens 32] [--rounds 3]
//	go run ./bench/serveload --url http://127.0.0.1:8080 --hidden-size 4096 --layers 32
//	go run ./bench/serveload --url http://127.0.0.1:8080 --hidden-size 128 --layers 6 --server-pid PID --hostile 10
//
// With --model it starts the server itself on a loopback port, in this process; with --url it
// loads a running one, which must be on loopback (--server-pid names its process, whose resident
// memory is then sampled). Either way the run is bounded: at most --requests per level and
// --timeout in all.
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
	hostile := fs.Int("hostile", 0, "hostile clients beside the second run of each level, in place of the steered run")
	hostileRate := fs.Float64("hostile-rate", 10, "requests a second of each amplify, flood and cross-site client (0: each as soon as the last is answered)")
	amplify := fs.Bool("amplify", false, "send one amplification request alone and report its time and the server's memory, then stop")
	pid := fs.Int("server-pid", 0, "with --url: the server's process id, to sample its resident memory")
	hold := fs.Int("hold", 0, "open this many slow-body and as many idle connections at once, report after --hold-for what the server did with them, then stop")
	holdFor := fs.Duration("hold-for", 40*time.Second, "with --hold: how long to watch the connections")
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
	if *maxTokens < 1 || *perLevel < 0 || *perLevel > maxRequests || *rounds < 1 || *rounds > 10 || *hostile < 0 || *hostile > 256 || !(*hostileRate >= 0) || *hold < 0 || *hold > 4096 {
		return fmt.Errorf("--max-tokens must be >= 1, --requests 0 to %d, --rounds 1 to 10, --hostile 0 to 256, --hostile-rate >= 0, --hold 0 to 4096", maxRequests)
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
		*pid = os.Getpid()
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
	if *amplify {
		return amplification(ctx, stdout, client, base, *layers, *maxTokens, *pid)
	}
	if *hold > 0 {
		start := time.Now()
		rep := Hostile{URL: base}.Hold(ctx, *hold, *holdFor)
		fmt.Fprintf(stdout, "%d slow-body and %d idle connections opened at once, watched for %.0f s:\n%s", *hold, *hold, time.Since(start).Seconds(), rep)
		if *pid > 0 {
			if rss, _, err := memory(*pid); err == nil {
				fmt.Fprintf(stdout, "server resident memory at the end: %.0f MB\n", float64(rss)/(1<<20))
			}
		}
		return ctx.Err()
	}
	second := "mixed"
	if *hostile > 0 {
		second = "hostile"
	}
	fmt.Fprintf(stdout, "max_tokens %d, temperature 0.8, %d round(s), prefix cache %v, %s", *maxTokens, *rounds, *prefixCache || *model == "", base)
	if *hostile > 0 {
		fmt.Fprintf(stdout, "; %d hostile clients, those sending requests at %g a second each (0: back to back)", *hostile, *hostileRate)
	}
	fmt.Fprint(stdout, "\n\n")
	fmt.Fprintln(stdout, "| concurrency | run | requests | errors | tokens | tok/s | latency p50 / p99 ms | TTFT p50 / p90 / p99 ms | ITL p50 / p90 / p99 ms | server RSS peak MB | tok/s vs plain | p99 latency vs plain |")
	fmt.Fprintln(stdout, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	var firstErr string
	var reports []*HostileReport
	for _, c := range conc {
		n := *perLevel
		if n == 0 {
			n = min(max(4*c, 8), maxRequests)
		}
		// Plain and steered (or attacked) runs alternate, so both see the same drift of a shared
		// machine; the throughput of a run is the median over its rounds, latencies are pooled.
		var runs [2][]Report
		var peaks [2]int64
		for range *rounds {
			for mode := range 2 {
				l := Load{URL: base, Concurrency: c, Requests: n, MaxTokens: *maxTokens}
				if mode == 1 && *hostile == 0 {
					l.Steering = mixed
				}
				mctx, stopSampling := context.WithCancel(ctx)
				peak := make(<-chan int64)
				if *pid > 0 {
					peak = rssPeak(mctx, *pid)
				}
				var attacked chan *HostileReport
				if mode == 1 && *hostile > 0 {
					attacked = make(chan *HostileReport, 1)
					go func() {
						attacked <- Hostile{URL: base, Clients: *hostile, Hidden: *hidden, Layers: *layers, Rate: *hostileRate}.Run(mctx)
					}()
					pause(ctx, time.Second) // the attacks under way before the load starts
				}
				r := l.Run(ctx, client)
				stopSampling()
				if attacked != nil {
					reports = append(reports, <-attacked)
				}
				if *pid > 0 {
					peaks[mode] = max(peaks[mode], <-peak)
				}
				if firstErr == "" {
					firstErr = r.FirstError
				}
				runs[mode] = append(runs[mode], r)
			}
		}
		var plainRate, plainP99 float64
		for mode, name := range []string{"plain", second} {
			var all Report
			var rates []float64
			for _, r := range runs[mode] {
				all.Requests += r.Requests
				all.Errors += r.Errors
				all.Tokens += r.Tokens
				all.TTFT = append(all.TTFT, r.TTFT...)
				all.ITL = append(all.ITL, r.ITL...)
				all.Latency = append(all.Latency, r.Latency...)
				rates = append(rates, r.Throughput())
			}
			rate, p99 := percentile(rates, 50), percentile(all.Latency, 99)
			rateRatio, p99Ratio := "", ""
			if mode == 0 {
				plainRate, plainP99 = rate, p99
			} else {
				if plainRate > 0 {
					rateRatio = fmt.Sprintf("%.3f", rate/plainRate)
				}
				if plainP99 > 0 {
					p99Ratio = fmt.Sprintf("%.2f", p99/plainP99)
				}
			}
			ms := func(xs []float64, ps ...float64) string {
				out := make([]string, len(ps))
				for i, p := range ps {
					out[i] = fmt.Sprintf("%.1f", 1e3*percentile(xs, p))
				}
				return strings.Join(out, " / ")
			}
			mem := ""
			if peaks[mode] > 0 {
				mem = fmt.Sprintf("%.0f", float64(peaks[mode])/(1<<20))
			}
			fmt.Fprintf(stdout, "| %d | %s | %d | %d | %d | %.1f | %s | %s | %s | %s | %s | %s |\n", c, name, all.Requests, all.Errors, all.Tokens, rate,
				ms(all.Latency, 50, 99), ms(all.TTFT, 50, 90, 99), ms(all.ITL, 50, 90, 99), mem, rateRatio, p99Ratio)
		}
	}
	for i, r := range reports {
		fmt.Fprintf(stdout, "\nhostile clients, run %d:\n%s", i+1, r)
	}
	if firstErr != "" {
		fmt.Fprintln(stdout, "\nfirst error:", firstErr)
	}
	return ctx.Err()
}

// amplification sends one amplification request while a normal client sends short requests one
// after another beside it, and reports the request's answer and time, the longest a normal request
// took meanwhile, and the server's resident memory before, at its peak and after.
func amplification(ctx context.Context, stdout io.Writer, client *http.Client, base string, layers, maxTokens, pid int) error {
	var before int64
	if pid > 0 {
		var err error
		if before, _, err = memory(pid); err != nil {
			return err
		}
	}
	mctx, stop := context.WithCancel(ctx)
	peak := make(<-chan int64)
	if pid > 0 {
		peak = rssPeak(mctx, pid)
	}
	probe := make(chan Report, 1)
	go func() {
		var all Report
		for {
			r := Load{URL: base, Concurrency: 1, Requests: 1, MaxTokens: maxTokens}.Run(mctx, client)
			if mctx.Err() != nil {
				break // cut short by the end of the measurement
			}
			all.Requests++
			all.Errors += r.Errors
			all.Latency = append(all.Latency, r.Latency...)
		}
		probe <- all
	}()
	h := Hostile{URL: base, Layers: layers}
	body := amplificationBody(layers, 16)
	start := time.Now()
	status := h.post(ctx, client, "/v1/chat/completions", body, "application/json", nil)
	took := time.Since(start)
	pause(ctx, 500*time.Millisecond) // the probe's requests after it, as the server recovers
	stop()
	p := <-probe
	fmt.Fprintf(stdout, "amplification request: %d bytes, layers \"0-%d\" repeated, max_tokens 16: status %s in %.3f s\n", len(body), layers-1, status, took.Seconds())
	fmt.Fprintf(stdout, "normal requests beside it (max_tokens %d, one at a time): %d, %d errors, latency p50 %.3f s, longest %.3f s\n",
		maxTokens, p.Requests, p.Errors, percentile(p.Latency, 50), percentile(p.Latency, 100))
	if pid > 0 {
		after, _, err := memory(pid)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "server resident memory: %.0f MB before, %.0f MB at the peak, %.0f MB after\n",
			float64(before)/(1<<20), float64(<-peak)/(1<<20), float64(after)/(1<<20))
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
	// As tiller serve runs it: the same admission, guards, timeouts and connection limit.
	srv, err := server.New(server.Config{Name: "load", Model: m, Tokenizer: tok, Engine: eng, CheckHost: true, MaxPending: opts.MaxRunning + opts.MaxWaiting})
	if err != nil {
		return "", 0, 0, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, 0, nil, err
	}
	ln = server.LimitListener(ln, 256, nil)
	ctx, cancel := context.WithCancel(context.Background())
	engDone := make(chan struct{})
	go func() { defer close(engDone); eng.Run(ctx) }()
	hs := server.HTTPServer(srv, nil)
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
		req.Header.Set("Content-Type", "application/json")
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

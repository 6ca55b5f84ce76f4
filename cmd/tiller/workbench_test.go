package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/tillerlm/tiller/llama/tinychat"
	"github.com/tillerlm/tiller/steer"
	"github.com/tillerlm/tiller/steer/data"
)

// chromiumInstall is what the browser tests say when there is no browser to drive.
const chromiumInstall = "the workbench's browser tests need Chromium: apt-get install -y chromium (Debian), or set TILLER_CHROMIUM to a Chromium or Chrome binary"

// chromium finds the browser: $TILLER_CHROMIUM (which must exist when set, so that CI cannot skip
// by accident), else chromium or google-chrome on the PATH.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TILLER_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("TILLER_CHROMIUM: %v (%s)", err, chromiumInstall)
		}
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip(chromiumInstall)
	return ""
}

// browser starts headless Chromium on a fresh profile and collects the page's console errors and
// uncaught exceptions.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1600, 1000))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTime := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTime(); cancel(); cancelAlloc() })
	var mu sync.Mutex
	var errs []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
				mu.Unlock()
			}
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it holds.
func waitFor(t *testing.T, ctx context.Context, cond string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(90*time.Second))); err != nil {
		// What the page showed: its error line and the state of the views.
		state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({error: document.getElementById("error").textContent,
			run: document.body.dataset.run, panes: [...document.querySelectorAll(".reply")].map((p) => ({...p.dataset, label: p.querySelector(".label")?.textContent})),
			dose: {...document.getElementById("dose").dataset}})`))
		t.Fatalf("waiting for %s: %v\npage: %s", cond, err, state)
	}
}

// hover moves the mouse onto the centre of the element sel finds, as a user would.
func hover(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.scrollIntoView({block: "center", inline: "center"});
		const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()`, sel)
	xy := eval[[]float64](t, ctx, js)
	do(t, ctx, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, xy[0], xy[1]))
}

// screenshot saves the page as PNG into $TILLER_UI_SCREENSHOTS, when set (`make screenshots`).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("TILLER_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// serveUI runs `tiller serve --ui` with args until the test ends, and returns its address.
func serveUI(t *testing.T, args ...string) string {
	t.Helper()
	r, w := io.Pipe()
	done := make(chan int, 1)
	var stderr strings.Builder
	go func() {
		done <- run(append([]string{"serve", "--ui", "--addr", "127.0.0.1:0", "--threads", "2"}, args...), w, &stderr)
		w.Close()
	}()
	lines := bufio.NewReader(r)
	var url string
	for url == "" {
		line, err := lines.ReadString('\n')
		if err != nil {
			t.Fatalf("serve printed no workbench address: %v\n%s", err, stderr.String())
		}
		if rest, ok := strings.CutPrefix(line, "workbench: "); ok {
			url = strings.TrimSpace(rest)
		}
	}
	go io.Copy(io.Discard, lines)
	t.Cleanup(func() {
		syscall.Kill(os.Getpid(), syscall.SIGINT)
		if code := <-done; code != 0 {
			t.Errorf("serve: exit code %d\n%s", code, stderr.String())
		}
	})
	return url
}

// scoresFile is what the test reads of a scores.json to check the page against.
type scoresFile struct {
	Layers    int                                   `json:"layers"`
	Heads     int                                   `json:"heads"`
	Positions int                                   `json:"positions"`
	Mean      map[string]map[string]json.RawMessage `json:"mean"`
	PerPair   []struct{ Tokens []int32 }            `json:"per_pair"`
	Locus     struct {
		Layer   int
		FromEnd []int `json:"positions_from_end"`
	} `json:"locus"`
}

// grid2 reads a [layer][pos] grid; nil entries are nodes without a value.
func (s *scoresFile) grid2(t *testing.T, method, kind string) [][]*float64 {
	t.Helper()
	var g [][]*float64
	if err := json.Unmarshal(s.Mean[method][kind], &g); err != nil {
		t.Fatalf("%s %s: %v", method, kind, err)
	}
	return g
}

// The workbench on the embedded model, in a real browser: the attribution explorer draws one cell
// per node and shows each node's scores on hover; the playground's slider changes the steered
// reply and only it; strength 0 is the unsteered reply; a sweep draws a point per strength. The
// page writes nothing to the console. With TILLER_UI_SCREENSHOTS set, it saves the README's
// screenshots of both views.
func TestWorkbench(t *testing.T) {
	ctx, consoleErrors := browser(t)
	t.Setenv("TILLER_CACHE", t.TempDir())
	work := t.TempDir()
	pairs := filepath.Join(demoData, tinychat.DemoAttributionFile)
	result := filepath.Join(work, "attributions", "joy")
	vectors := filepath.Join(work, "vectors")
	if err := os.Mkdir(vectors, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"attribute", "--pairs", pairs, "--align", "right", "--verify", "30", "--out", result},
		{"derive", "--pairs", filepath.Join(demoData, tinychat.DemoContrastFile), "--locus", filepath.Join(result, "locus.json"), "--out", filepath.Join(vectors, "joy.safetensors")},
	} {
		if code, _, stderr := tiller(t, args...); code != 0 {
			t.Fatalf("tiller %s: %s", strings.Join(args, " "), stderr)
		}
	}
	var scores scoresFile
	if b, err := os.ReadFile(filepath.Join(result, "scores.json")); err != nil || json.Unmarshal(b, &scores) != nil {
		t.Fatalf("scores.json: %v", err)
	}
	url := serveUI(t, "--vectors", vectors, "--attributions", filepath.Dir(result))

	t.Run("attribution", func(t *testing.T) {
		do(t, ctx, chromedp.Navigate(url+"#attribution"))
		waitFor(t, ctx, `document.querySelectorAll("#heatmap-svg rect.cell").length > 0 && document.querySelector("#attr-result").value === "attributions/joy"`)
		cells := func() int { return eval[int](t, ctx, `document.querySelectorAll("#heatmap-svg rect.cell").length`) }
		if got, want := cells(), scores.Layers*scores.Positions; got != want {
			t.Errorf("resid_pre heatmap: %d cells, want %d layers × %d positions", got, scores.Layers, scores.Positions)
		}
		atp, exact := scores.grid2(t, "atp", "resid_pre"), scores.grid2(t, "exact", "resid_pre")
		// Hover the largest |AtP| node, one that exact patching measured, and one it did not.
		type node struct{ l, p int }
		var largest, measured, unmeasured node
		var xs, ys []float64
		for l := range atp {
			for p := range atp[l] {
				if math.Abs(*atp[l][p]) > math.Abs(*atp[largest.l][largest.p]) {
					largest = node{l, p}
				}
				if exact[l][p] != nil {
					measured = node{l, p}
					xs, ys = append(xs, *atp[l][p]), append(ys, *exact[l][p])
				} else if l > 0 {
					unmeasured = node{l, p}
				}
			}
		}
		if len(xs) == 0 {
			t.Fatal("--verify measured no resid_pre node")
		}
		number := regexp.MustCompile(`^[+-]?[0-9.]+(e[+-]?[0-9]+)?$`)
		for _, n := range []node{measured, unmeasured, largest} {
			hover(t, ctx, fmt.Sprintf(`#heatmap-svg rect.cell[data-r="%d"][data-c="%d"]`, n.l, n.p))
			waitFor(t, ctx, `!document.querySelector("#tip").hidden`)
			name := eval[string](t, ctx, `document.querySelector("#tip .node").textContent`)
			if want := fmt.Sprintf("blocks.%d.hook_resid_pre @−%d", n.l, scores.Positions-1-n.p); !strings.HasPrefix(name, want) {
				t.Errorf("tooltip names %q, want %q", name, want)
			}
			for method, want := range map[string]*float64{"atp": atp[n.l][n.p], "exact": exact[n.l][n.p]} {
				text := eval[string](t, ctx, fmt.Sprintf(`document.querySelector('#tip [data-method="%s"]').textContent`, method))
				if want == nil {
					if text != "not measured" {
						t.Errorf("%s of node %v: %q, want not measured", method, n, text)
					}
					continue
				}
				got, err := strconv.ParseFloat(text, 64)
				if !number.MatchString(text) || err != nil || math.Abs(got-*want) > 5e-4*math.Abs(*want)+1e-12 {
					t.Errorf("%s of node %v on hover: %q, want %.6g", method, n, text, *want)
				}
			}
		}
		if got := eval[int](t, ctx, `document.querySelectorAll("#heatmap-svg rect.locus").length`); got != len(scores.Locus.FromEnd) {
			t.Errorf("%d locus marks, want %d", got, len(scores.Locus.FromEnd))
		}
		if got := eval[int](t, ctx, `document.querySelectorAll("#scatter-svg circle.pt").length`); got != len(xs) {
			t.Errorf("scatter: %d points, want the %d nodes exact patching measured", got, len(xs))
		}
		if r, text := pearson(xs, ys), eval[string](t, ctx, `document.querySelector("#scatter-r").textContent`); !strings.HasSuffix(text, fmt.Sprintf("Pearson r = %.3f", r)) {
			t.Errorf("scatter says %q, want Pearson r = %.3f", text, r)
		}
		screenshot(t, ctx, "workbench-attribution.png")
		for kind, want := range map[string]int{"head": scores.Layers * scores.Heads, "head_pos": scores.Layers * scores.Heads * scores.Positions, "mlp_out": scores.Layers * scores.Positions} {
			eval[bool](t, ctx, fmt.Sprintf(`(() => { const s = document.querySelector("#attr-kind"); s.value = %q; return s.dispatchEvent(new Event("change")); })()`, kind))
			if got := cells(); got != want {
				t.Errorf("%s heatmap: %d cells, want %d", kind, got, want)
			}
		}
		// A scores.json opened from disk is read in the page; a file that is not one is an error
		// the page shows, not one it throws.
		notScores := filepath.Join(work, "notes.json")
		os.WriteFile(notScores, []byte(`{"layers": 2}`), 0o644)
		do(t, ctx, chromedp.SetUploadFiles("#attr-file", []string{notScores}))
		waitFor(t, ctx, `!document.getElementById("error").hidden`)
		if msg := eval[string](t, ctx, `document.getElementById("error").textContent`); !strings.Contains(msg, "notes.json") || !strings.Contains(msg, "not a scores.json") {
			t.Errorf("opening a file that is not a scores.json: %q", msg)
		}
		do(t, ctx, chromedp.SetUploadFiles("#attr-file", []string{filepath.Join(result, "scores.json")}))
		waitFor(t, ctx, `document.getElementById("error").hidden && document.getElementById("attr-summary").textContent.startsWith("scores.json: 40 pairs")`)
		if got, want := cells(), scores.Layers*scores.Positions; got != want {
			t.Errorf("the opened file's heatmap: %d cells, want %d", got, want)
		}
		eval[bool](t, ctx, `(() => { for (const [id, v] of [["attr-kind", "resid_pre"], ["attr-pair", "0"]]) { const s = document.getElementById(id); s.value = v; s.dispatchEvent(new Event("change")); } return true; })()`)
		if got, want := cells(), scores.Layers*len(scores.PerPair[0].Tokens); got != want {
			t.Errorf("pair 1's heatmap: %d cells, want %d layers × its %d tokens", got, scores.Layers, len(scores.PerPair[0].Tokens))
		}
	})

	t.Run("steering", func(t *testing.T) {
		do(t, ctx, chromedp.Navigate(url+"#steering"))
		// Both replies of the newest run are in, with the steered one generated at label's strength.
		settled := func(label string) (unsteered, steered string) {
			t.Helper()
			waitFor(t, ctx, fmt.Sprintf(`(() => { const run = document.body.dataset.run, u = document.getElementById("unsteered"), s = document.getElementById("steered");
				return u.dataset.state === "done" && s.dataset.state === "done" && u.dataset.run === run && s.dataset.run === run && s.querySelector(".label").textContent.includes(%q); })()`, label))
			return eval[string](t, ctx, `document.querySelector("#unsteered .text").textContent`), eval[string](t, ctx, `document.querySelector("#steered .text").textContent`)
		}
		u1, s1 := settled("at 0.4 ")
		if u1 == "" || s1 == "" {
			t.Fatalf("empty replies: %q, %q", u1, s1)
		}
		// The scores shown are steer's.
		lb, file, _ := data.File(data.Lexicon)
		lx, err := steer.ParseLexicon(file, lb)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := eval[string](t, ctx, `document.querySelector('#unsteered [data-measure="vader_compound"]').textContent`), fmt.Sprintf("%.3f", steer.Score(u1, lx).Compound); got != want {
			t.Errorf("unsteered VADER shown %s, want %s for %q", got, want, u1)
		}
		do(t, ctx, chromedp.Focus("#strength"), chromedp.KeyEvent(kb.ArrowRight+kb.ArrowRight+kb.ArrowRight+kb.ArrowRight))
		u2, s2 := settled("at 0.6 ")
		if s2 == s1 {
			t.Errorf("moving the slider from 0.4 to 0.6 left the steered reply as it was: %q", s2)
		}
		if u2 != u1 {
			t.Errorf("moving the slider changed the unsteered reply: %q, then %q", u1, u2)
		}
		do(t, ctx, chromedp.KeyEvent(strings.Repeat(kb.ArrowLeft, 12)))
		u0, s0 := settled("at 0 ")
		if s0 != u0 || u0 != u1 {
			t.Errorf("strength 0: steered %q, unsteered %q (first %q)", s0, u0, u1)
		}
		// The vector was derived at the attribution's locus, so the page offers to steer only there.
		wantLocus := make([]string, len(scores.Locus.FromEnd))
		for i, k := range scores.Locus.FromEnd {
			wantLocus[i] = fmt.Sprintf("−%d", k)
		}
		if got := eval[string](t, ctx, `document.querySelector('#positions [value="locus"]').textContent`); got != "locus ("+strings.Join(wantLocus, ", ")+" from the end)" {
			t.Errorf("the locus option reads %q, want the positions %v", got, wantLocus)
		}
		positions := func(p string) {
			eval[bool](t, ctx, fmt.Sprintf(`(() => { const s = document.getElementById("positions"); s.value = %q; return s.dispatchEvent(new Event("change")); })()`, p))
		}
		positions("locus")
		do(t, ctx, chromedp.Focus("#strength"), chromedp.KeyEvent(strings.Repeat(kb.ArrowRight, 8)))
		if ul, _ := settled("at 0.4 "); ul != u1 {
			t.Errorf("steering at the locus changed the unsteered reply: %q", ul)
		}
		positions("all")
		if _, s := settled("at 0.4 "); s != s1 {
			t.Errorf("back at all positions, 0.4 gives %q, before %q", s, s1)
		}
		do(t, ctx, chromedp.Click("#sweep")) // 0 to 1 in 6 points, 4 replies each
		waitFor(t, ctx, `document.getElementById("dose").dataset.state === "done"`)
		got := eval[[]float64](t, ctx, `[...document.querySelectorAll("#dose-svg circle.pt")].map((c) => Number(c.dataset.strength))`)
		if fmt.Sprint(got) != "[0 0.2 0.4 0.6 0.8 1]" {
			t.Errorf("the sweep drew points at %v, want one at each of 0, 0.2, 0.4, 0.6, 0.8, 1", got)
		}
		if rows := eval[int](t, ctx, `document.querySelectorAll("#sweep-table tbody tr").length`); rows != 6 {
			t.Errorf("sweep table: %d rows", rows)
		}
		do(t, ctx, chromedp.Focus("#strength"), chromedp.KeyEvent(strings.Repeat(kb.ArrowRight, 4)))
		settled("at 0.6 ")
		screenshot(t, ctx, "workbench-steering.png")
	})

	if errs := consoleErrors(); len(errs) > 0 {
		t.Errorf("the page wrote %d errors to the console:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}

func pearson(xs, ys []float64) float64 {
	n := float64(len(xs))
	var mx, my float64
	for i := range xs {
		mx += xs[i] / n
		my += ys[i] / n
	}
	var sxy, sxx, syy float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
		syy += (ys[i] - my) * (ys[i] - my)
	}
	return sxy / math.Sqrt(sxx*syy)
}

// serve refuses an attributions folder that is not one, and a lexicon it cannot read, before it
// loads the model.
func TestServeWorkbenchFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--attributions", filepath.Join(t.TempDir(), "missing")}, 2, "--attributions"},
		{[]string{"--attributions", file}, 2, "not a folder"},
		{[]string{"--lexicon", file}, 1, file},
	} {
		code, _, stderr := tiller(t, append([]string{"serve", "--model", "nowhere", "--ui"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, %s", c.args, code, stderr)
		}
	}
}

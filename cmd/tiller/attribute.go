package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tillerlm/tiller/attrib/tasks"

	"github.com/tillerlm/tiller/attrib"
	"github.com/tillerlm/tiller/tensor"
)

func runAttribute(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("attribute", "--model DIR --pairs FILE.jsonl|joy|trust|sadness|anger --out DIR [--align right] [--star] [--verify auto|all|N] [--device cuda]", stderr)
	var mf modelFlags
	mf.register(fs)
	pairsPath := fs.String("pairs", "", `JSONL file of pairs, one per line, or a shipped set: joy, trust, sadness, anger (attrib/tasks; required):
  {"clean": TEXT, "corrupt": TEXT, "metric": {"logit_diff": [ANSWER, DISTRACTOR]} or {"logprob": "continuation"}}
TEXT is raw text or a list of {"role", "content"} chat messages (a chat ending with the
assistant's message continues that message; one ending with the user's opens the assistant's turn)`)
	out := fs.String("out", "", "folder to write scores.json, scores.csv, heatmap_*.png/.svg and locus.json into (created; required)")
	alignName := fs.String("align", "none", "none: clean and corrupt must have the same token length; right: line them up at the end (the shorter padded on the left)")
	star := fs.Bool("star", false, "AtP*: add q and k nodes with the QK fix, and GradDrop magnitudes (one extra backward pass per layer)")
	verify := fs.String("verify", "auto", "exact activation patching as ground truth: all, none, N (the N/2 nodes with the largest |AtP| and N/2 at random), or auto (all when that takes under a minute)")
	nodes := fs.String("nodes", "", "node kinds to score, comma-separated: resid_pre, attn_out, mlp_out, head, head_pos, q, k (default: the first five, plus q and k with --star)")
	batch := fs.Int("batch", 0, "pairs per forward batch (0: 8, or as many as fit in the device's memory with --device cuda)")
	limit := fs.Int("limit", 0, "use only the first N pairs of the file (0: all)")
	top := fs.Int("top", 12, "top nodes to list")
	seed := fs.Uint64("seed", 1, "seed of the --verify sample")
	dtypeName := fs.String("dtype", "f32", "precision of activations and gradients: f32, or f64 for exact analysis (CPU)")
	device := deviceFlag(fs)
	var pf precisionFlags
	pf.register(fs, false, true)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := mf.check(); err != nil {
		return err
	}
	switch {
	case *pairsPath == "":
		return usagef("--pairs is required")
	case *out == "":
		return usagef("--out is required")
	case len(pos) > 0:
		return usagef("unexpected argument %q (the pairs go in --pairs)", pos[0])
	case *batch < 0:
		return usagef("--batch %d, want >= 1 (or 0 for the default)", *batch)
	case *limit < 0:
		return usagef("--limit %d, want >= 0", *limit)
	}
	if err := checkDevice(*device); err != nil {
		return err
	}
	align, err := attrib.ParseAlign(*alignName)
	if err != nil {
		return usagef("--%v", err)
	}
	var dt tensor.DType
	switch *dtypeName {
	case "f32":
		dt = tensor.F32
	case "f64":
		dt = tensor.F64
	default:
		return usagef("--dtype %q: want f32 or f64", *dtypeName)
	}
	opt := attrib.Options{Star: *star, Batch: *batch, Seed: *seed, Progress: stderr}
	switch *verify {
	case "auto":
		opt.Verify = attrib.VerifyAuto
	case "all":
		opt.Verify = attrib.VerifyAll
	case "none", "0":
		opt.Verify = 0
	default:
		n, err := strconv.Atoi(*verify)
		if err != nil || n < 0 {
			return usagef("--verify %q: want auto, all, none or a number of nodes", *verify)
		}
		opt.Verify = n
	}
	if *nodes != "" {
		for _, name := range strings.Split(*nodes, ",") {
			k, err := attrib.ParseKind(strings.TrimSpace(name))
			if err != nil {
				return usagef("--nodes: %v", err)
			}
			opt.Kinds = append(opt.Kinds, k)
		}
	}

	raw, pairsFile, err := shipped(*pairsPath, "attribution set", tasks.File, tasks.Names)
	if err != nil {
		return err
	}
	pairs, err := attrib.ParsePairs(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%s%v", pairsFile, err)
	}
	if *limit > 0 && *limit < len(pairs) {
		pairs = pairs[:*limit]
	}
	*pairsPath = pairsFile
	sum := sha256.Sum256(raw)
	l, r, err := openAnalysis(mf, *device, dt, pf.deterministic, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	inputs, err := attrib.Encode(l.tok, pairs, attrib.EncodeOptions{Vocab: l.model.Config.Vocab, MaxPositions: l.model.Config.MaxPositions, Align: align})
	if err != nil {
		return fmt.Errorf("%s: %v", *pairsPath, err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "attribute: %d pairs, %d layers × %d heads, %s on the %s\n", len(inputs), l.model.Config.Layers, l.model.Config.Heads, *dtypeName, map[string]string{"cpu": "CPU", "cuda": "GPU"}[*device])
	res, err := attrib.Run(r, inputs, opt)
	if err != nil {
		return err
	}

	loc, err := res.Locus()
	if err != nil && res.Mean[attrib.AtP][attrib.ResidPre] != nil {
		return err
	}
	var written []string
	if loc != nil {
		loc.Model, loc.Pairs, loc.PairsSHA256 = mf.name, *pairsPath, hex.EncodeToString(sum[:])
		path := filepath.Join(*out, "locus.json")
		if err := loc.Write(path); err != nil {
			return err
		}
		written = append(written, path)
	}
	meta := attrib.Meta{Model: mf.name, Pairs: *pairsPath, PairsSHA256: hex.EncodeToString(sum[:]), Align: align.String(), DType: *dtypeName, Device: *device}
	path := filepath.Join(*out, "scores.json")
	if err := res.WriteJSON(path, meta, loc); err != nil {
		return err
	}
	written = append(written, path)
	path = filepath.Join(*out, "scores.csv")
	if err := res.WriteCSV(path); err != nil {
		return err
	}
	written = append(written, path)
	for _, k := range []attrib.Kind{attrib.ResidPre, attrib.AttnOut, attrib.MLPOut, attrib.Head} {
		if res.Mean[attrib.AtP][k] == nil {
			continue
		}
		for _, ext := range []string{".png", ".svg"} {
			path := filepath.Join(*out, "heatmap_"+k.String()+ext)
			if err := res.Heatmap(attrib.AtP, k, path); err != nil {
				return err
			}
			written = append(written, path)
		}
	}
	res.Summary(stdout, loc, *top)
	t := res.Timing
	fmt.Fprintf(stdout, "time: AtP %.2f s (%.3f s per pair: forward of both prompts %.3f, backward %.3f)",
		t.AtP().Seconds(), t.AtP().Seconds()/float64(len(inputs)), t.Forward.Seconds()/float64(len(inputs)),
		t.Backward.Seconds()/float64(len(inputs)))
	if t.Star > 0 {
		fmt.Fprintf(stdout, "; AtP* extra %.2f s", t.Star.Seconds())
	}
	if t.Patched > 0 {
		fmt.Fprintf(stdout, "; exact patching %.2f s for %d patched runs", t.Exact.Seconds(), t.Patched)
	}
	fmt.Fprintf(stdout, "\nwrote %s\n", strings.Join(written, ", "))
	return nil
}

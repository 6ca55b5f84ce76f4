package main

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"

	"github.com/tillerlm/tiller/attrib"
	"github.com/tillerlm/tiller/steer"
	"github.com/tillerlm/tiller/tensor"
)

func runDerive(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("derive", "--model DIR --pairs FILE (--layer L | --layers A-B | --locus locus.json) [--hook hook_resid_post] [--positions last|mean-response|all] [--method mean|pca] --out joy.safetensors|joy.gguf [--device cuda]\n       tiller derive --from FILE [--model DIR] --out FILE   (convert between safetensors and GGUF)", stderr)
	var mf modelFlags
	mf.register(fs)
	pairsArg := fs.String("pairs", "", "contrastive pairs: JSONL of {\"positive\": TEXT, \"negative\": TEXT} (TEXT a string or chat messages), or a shipped set: joy, trust, sadness, anger, fear")
	layer := fs.Int("layer", -1, "the layer to derive at")
	layersArg := fs.String("layers", "", "layers to derive at: A-B (inclusive) or a list; one direction per layer")
	locusPath := fs.String("locus", "", "locus.json from `tiller attribute`: its hook and layer, and its positions recorded for `steer --positions locus`")
	hookArg := fs.String("hook", "hook_resid_post", "hook point within each layer ("+strings.Join(steer.SteerableHooks, ", ")+"), or a whole name such as blocks.12.hook_resid_post")
	positions := fs.String("positions", "mean-response", "token positions reduced per text: last, mean-response (the assistant reply's tokens), or all (every token but BOS)")
	method := fs.String("method", "mean", "mean (difference of means: ActAdd/CAA) or pca (first principal component of the paired differences: RepE/repeng)")
	holdout := fs.Float64("holdout", 0.2, "fraction of pairs held out of the derivation for the sign test (0: use every pair)")
	passTokens := fs.Int("pass-tokens", 1024, "tokens per forward pass of the activation collection (texts are batched whole)")
	out := fs.String("out", "", "vector file to write: .safetensors (tiller's layout, with metadata) or .gguf (llama.cpp control vector) (required)")
	ggufOut := fs.String("gguf", "", "also write a GGUF control vector to this file")
	scale := fs.Float64("gguf-scale", 1, "multiply the vector by this in GGUF output (llama.cpp adds it as stored)")
	from := fs.String("from", "", "convert this vector file (safetensors or GGUF) instead of deriving one")
	otherModel := fs.Bool("other-model", false, "with --from and --model: accept a vector made for a model of another shape")
	device := deviceFlag(fs)
	var pf precisionFlags
	pf.register(fs, false, true)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usagef("unexpected argument %q", pos[0])
	case *out == "":
		return usagef("--out is required")
	case math.IsNaN(*scale) || math.IsInf(*scale, 0):
		return usagef("--gguf-scale %g is not a number", *scale)
	}
	if *from != "" {
		return convertVector(mf, *from, *out, *ggufOut, float32(*scale), *otherModel, stdout, stderr)
	}
	if err := mf.check(); err != nil {
		return err
	}
	if err := checkDevice(*device); err != nil {
		return err
	}
	chosen := 0
	for _, set := range []bool{*layer >= 0, *layersArg != "", *locusPath != ""} {
		if set {
			chosen++
		}
	}
	if chosen > 1 {
		return usagef("give one of --layer, --layers and --locus")
	}
	if *pairsArg == "" {
		return usagef("--pairs is required")
	}
	if !(*holdout >= 0 && *holdout < 1) {
		return usagef("--holdout %g, want 0 <= h < 1", *holdout)
	}
	pairBytes, pairFile, err := shippedData(*pairsArg, "pair set")
	if err != nil {
		return err
	}
	pairs, err := steer.ParsePairs(pairFile, pairBytes)
	if err != nil {
		return err
	}
	l, r, err := openAnalysis(mf, *device, tensor.F32, pf.deterministic, stderr)
	if err != nil {
		return err
	}
	defer l.Close()
	c := l.model.Config

	hook, hookLayer, err := steer.ParseHook(*hookArg, c.Layers)
	if err != nil {
		return usageError{err.Error()}
	}
	var layers []int
	var fromEnd []int
	switch {
	case *locusPath != "":
		loc, err := attrib.ReadLocus(*locusPath)
		if err != nil {
			return err
		}
		if hook, hookLayer, err = steer.ParseHook(loc.Hook, c.Layers); err != nil {
			return fmt.Errorf("%s: %v", *locusPath, err)
		}
		if hookLayer != loc.Layer {
			return fmt.Errorf("%s: hook %s is not at the locus layer %d", *locusPath, loc.Hook, loc.Layer)
		}
		layers, fromEnd = []int{loc.Layer}, loc.FromEnd
		if fromEnd == nil {
			fromEnd = []int{}
		}
	case *layer >= 0:
		if *layer >= c.Layers {
			return fmt.Errorf("--layer %d is out of range: the model has layers 0 to %d", *layer, c.Layers-1)
		}
		layers = []int{*layer}
	case *layersArg != "":
		if layers, err = parseLayers("layers", *layersArg, c.Layers); err != nil {
			return err
		}
	case hookLayer >= 0:
		layers = []int{hookLayer}
	default:
		return usagef("give the layer: --layer L, --layers A-B, --locus locus.json, or a whole --hook name (blocks.L.hook_resid_post)")
	}
	if hookLayer >= 0 && *locusPath == "" && (len(layers) != 1 || layers[0] != hookLayer) {
		return usagef("--hook %s names layer %d, which disagrees with --layer/--layers", *hookArg, hookLayer)
	}

	fmt.Fprintf(stderr, "derive: %d pairs from %s, %s of %s at layers %v, method %s, positions %s\n", len(pairs), pairFile, hook, mf.name, layers, *method, *positions)
	v, err := steer.Derive(r, l.tok, pairs, steer.DeriveOptions{Hook: hook, Layers: layers, Positions: *positions, Method: *method,
		HoldOut: *holdout, PassTokens: *passTokens, Progress: stderr})
	if err != nil {
		return err
	}
	info := steer.ModelInfo(mf.name, c)
	info.Method, info.Positions, info.TrainPairs, info.HeldPairs, info.Source = v.Info.Method, v.Info.Positions, v.Info.TrainPairs, v.Info.HeldPairs, v.Info.Source
	info.Pairs, info.PairsSHA, info.FromEnd = pairFile, steer.Hash(pairBytes), fromEnd
	v.Info = info
	report(stdout, v)
	return writeVector(v, *out, *ggufOut, float32(*scale), stdout, stderr)
}

// report prints how well each layer's direction separates the pairs.
func report(w io.Writer, v *steer.Vector) {
	fmt.Fprintf(w, "%d training pairs, %d held out; projections of (positive − negative) on the unit vector:\n", v.Info.TrainPairs, v.Info.HeldPairs)
	fmt.Fprintf(w, "%-6s %12s %12s %10s %10s %10s\n", "layer", "mean norm", "gap", "gap/norm", "train acc", "held acc")
	pct := func(x float64) string {
		if math.IsNaN(x) {
			return "—"
		}
		return fmt.Sprintf("%.1f%%", 100*x)
	}
	for _, l := range v.Layers {
		fmt.Fprintf(w, "%-6d %12.4g %12.4g %10.4f %10s %10s\n", l.Index, l.MeanNorm, l.Gap, l.Gap/l.MeanNorm, pct(l.TrainAcc), pct(l.HeldAcc))
	}
}

// writeVector saves v to out (by extension) and optionally to a GGUF file too.
func writeVector(v *steer.Vector, out, ggufOut string, scale float32, stdout, stderr io.Writer) error {
	write := func(path string) error {
		if strings.EqualFold(filepath.Ext(path), ".gguf") {
			if err := steer.WriteGGUF(path, v, scale); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "note: %s\n", steer.BlockIndexing)
		} else if err := v.Save(path); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s\n", path)
		return nil
	}
	if err := write(out); err != nil {
		return err
	}
	if ggufOut != "" {
		if !strings.EqualFold(filepath.Ext(ggufOut), ".gguf") {
			return usagef("--gguf %s: want a .gguf file name", ggufOut)
		}
		return write(ggufOut)
	}
	return nil
}

// convertVector reads a vector file (safetensors or GGUF), checks it against the model when one
// is given, and writes it in the format of out's extension.
func convertVector(mf modelFlags, from, out, ggufOut string, scale float32, otherModel bool, stdout, stderr io.Writer) error {
	v, err := steer.Load(from)
	if err != nil {
		return err
	}
	if strings.HasPrefix(v.Info.Source, "gguf") {
		fmt.Fprintf(stderr, "note: read %s with %s\n", from, steer.BlockIndexing)
	}
	if mf.dir != "" {
		c, err := readConfig(mf.dir)
		if err != nil {
			return err
		}
		if err := v.Check(from, c, otherModel); err != nil {
			return err
		}
		if v.Info.ModelShape == "" {
			shape, model := steer.ModelShape(c), steer.ModelInfo(mf.name, c)
			v.Info.ModelShape, v.Info.Model, v.Info.NumLayers = shape, model.Model, c.Layers
		}
	}
	fmt.Fprintf(stdout, "%s: %s at layers %v, %d values each\n", from, v.Hook, v.LayerIndices(), len(v.Layers[0].Values))
	return writeVector(v, out, ggufOut, scale, stdout, stderr)
}

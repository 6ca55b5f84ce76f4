package main

import (
	"fmt"
	"io"
	"sort"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/llama/gguf"
	"github.com/tillerlm/tiller/llama/safetensors"
)

func runInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", "--model DIR|ORG/NAME|FILE.gguf", stderr)
	dir := fs.String("model", "", modelUsage)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *dir, err = modelDir(*dir); err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if llama.IsGGUF(*dir) {
		if err := inspectGGUF(*dir, stdout); err != nil {
			return err
		}
	}
	m, err := loadModel(*dir, false, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	c := m.Config
	fmt.Fprintf(stdout, "model      %s (%s)\n", *dir, c.ModelType)
	fmt.Fprintf(stdout, "shape      %d layers, hidden %d, ffn %d, %d heads × %d, %d kv heads, vocab %d\n",
		c.Layers, c.Dim, c.FFNDim, c.Heads, c.HeadDim, c.KVHeads, c.Vocab)
	rope := "none"
	switch c.RopeScaling.Type {
	case "linear":
		rope = fmt.Sprintf("linear, factor %g", c.RopeScaling.Factor)
	case "llama3":
		s := c.RopeScaling
		rope = fmt.Sprintf("llama3, factor %g, low %g, high %g, original context %d", s.Factor, s.LowFreqFactor, s.HighFreqFactor, s.OriginalMaxPositions)
	}
	fmt.Fprintf(stdout, "context    %d positions; rope theta %g, scaling %s\n", c.MaxPositions, c.RopeTheta, rope)
	fmt.Fprintf(stdout, "norm eps   %g; attention bias %v, mlp bias %v, tied embeddings %v\n", c.NormEps, c.AttentionBias, c.MLPBias, c.TieEmbeddings)
	fmt.Fprintf(stdout, "tokens     bos %d, eos %v, stop %v\n", c.BOS, c.EOS, m.StopIDs())
	fmt.Fprintf(stdout, "parameters %d (%s)\n\n", c.Params(), count(c.Params()))

	perDType := map[string]int64{}
	var total int64
	fmt.Fprintf(stdout, "%-52s %-5s %-16s %12s\n", "tensor (in memory)", "dtype", "shape", "bytes")
	for _, w := range m.Weights() {
		t := *w.Dst
		n := int64(len(t.Data))
		fmt.Fprintf(stdout, "%-52s %-5s %-16s %12d\n", w.Name, t.DType, safetensors.ShapeString(t.Shape), n)
		perDType[t.DType.String()] += n
		total += n
	}
	kvPerToken := int64(2 * c.Layers * c.KVHeads * c.HeadDim * 4)
	fmt.Fprintf(stdout, "\nweights    %.3f GB", float64(total)/1e9)
	names := make([]string, 0, len(perDType))
	for d := range perDType {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		fmt.Fprintf(stdout, "; %s %.3f GB", d, float64(perDType[d])/1e9)
	}
	fmt.Fprintf(stdout, "\nKV cache   %d bytes per position (f32 on the CPU); %.3f GB at the full context of %d\n",
		kvPerToken, float64(kvPerToken)*float64(c.MaxPositions)/1e9, c.MaxPositions)
	return nil
}

// inspectGGUF prints a GGUF file's metadata (long arrays cut short) and the types of its tensors.
func inspectGGUF(path string, stdout io.Writer) error {
	g, err := gguf.Open(path)
	if err != nil {
		return err
	}
	defer g.Close()
	fmt.Fprintf(stdout, "GGUF       %s: version %d, %d metadata keys, %d tensors, %.1f MB\n", path, g.Version, len(g.Keys), len(g.Tensors), float64(len(g.Data))/1e6)
	for _, k := range g.Keys {
		fmt.Fprintf(stdout, "  %-44s %s\n", k, g.Meta[k].Format(100))
	}
	types := map[string]int64{}
	counts := map[string]int{}
	for _, t := range g.Tensors {
		types[t.Type.String()] += t.Size
		counts[t.Type.String()]++
	}
	names := make([]string, 0, len(types))
	for n := range types {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprint(stdout, "tensors   ")
	for i, n := range names {
		if i > 0 {
			fmt.Fprint(stdout, ";")
		}
		fmt.Fprintf(stdout, " %d %s (%.1f MB)", counts[n], n, float64(types[n])/1e6)
	}
	fmt.Fprint(stdout, "\n\n")
	return nil
}

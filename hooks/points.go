// Package hooks names the points of a LLaMA forward pass where activations can be read, replaced
// or added to, and holds the interventions of one run (a Set) and the activations it captures (a
// Cache). Names follow TransformerLens, so its users' habits carry over.
package hooks

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Kind is what a hook point holds, independently of its layer.
type Kind uint8

const (
	Embed     Kind = iota // hook_embed: token embeddings, (pos, d_model)
	ResidPre              // blocks.L.hook_resid_pre: the layer's input, (pos, d_model)
	Q                     // blocks.L.attn.hook_q: queries before RoPE, (pos, head, d_head)
	K                     // blocks.L.attn.hook_k: keys before RoPE, (pos, kv_head, d_head)
	V                     // blocks.L.attn.hook_v: values, (pos, kv_head, d_head)
	Pattern               // blocks.L.attn.hook_pattern: attention probabilities, (head, pos_q, pos_k)
	Z                     // blocks.L.attn.hook_z: each head's output before o_proj, (pos, head, d_head)
	AttnOut               // blocks.L.hook_attn_out: o_proj output, (pos, d_model)
	ResidMid              // blocks.L.hook_resid_mid: resid_pre + attn_out, (pos, d_model)
	MLPPost               // blocks.L.mlp.hook_post: silu(gate) ⊙ up, (pos, d_mlp)
	MLPOut                // blocks.L.hook_mlp_out: down_proj output, (pos, d_model)
	ResidPost             // blocks.L.hook_resid_post: the layer's output, (pos, d_model)
	FinalNorm             // ln_final.hook_normalized: the final RMSNorm's output (its weight applied), (pos, d_model)
)

// layerKinds are the kinds every decoder layer has, in forward order.
var layerKinds = []Kind{ResidPre, Q, K, V, Pattern, Z, AttnOut, ResidMid, MLPPost, MLPOut, ResidPost}

var suffixes = map[Kind]string{
	ResidPre: "hook_resid_pre", Q: "attn.hook_q", K: "attn.hook_k", V: "attn.hook_v",
	Pattern: "attn.hook_pattern", Z: "attn.hook_z", AttnOut: "hook_attn_out", ResidMid: "hook_resid_mid",
	MLPPost: "mlp.hook_post", MLPOut: "hook_mlp_out", ResidPost: "hook_resid_post",
}

// Point is one hook point: a kind at a layer. Layer is -1 for hook_embed and ln_final.hook_normalized.
type Point struct {
	Layer int
	Kind  Kind
}

// Name is the TransformerLens-style name, e.g. "blocks.3.hook_resid_post".
func (p Point) Name() string {
	switch p.Kind {
	case Embed:
		return "hook_embed"
	case FinalNorm:
		return "ln_final.hook_normalized"
	}
	return "blocks." + strconv.Itoa(p.Layer) + "." + suffixes[p.Kind]
}

func (p Point) String() string { return p.Name() }

// Index numbers the points of a model with the given number of layers in forward order, from 0
// (hook_embed) to Count(layers)−1 (ln_final.hook_normalized), so a run keeps its interventions in
// a slice.
func (p Point) Index(layers int) int {
	switch p.Kind {
	case Embed:
		return 0
	case FinalNorm:
		return Count(layers) - 1
	}
	return 1 + p.Layer*len(layerKinds) + int(p.Kind-ResidPre)
}

// Count is the number of hook points of a model with the given number of layers.
func Count(layers int) int { return 2 + layers*len(layerKinds) }

// PerHead reports whether the point has a head axis that a patch may select.
func (p Point) PerHead() bool {
	switch p.Kind {
	case Q, K, V, Pattern, Z:
		return true
	}
	return false
}

// All lists every point of a model with the given number of layers, in forward order.
func All(layers int) []Point {
	ps := []Point{{-1, Embed}}
	for l := 0; l < layers; l++ {
		for _, k := range layerKinds {
			ps = append(ps, Point{l, k})
		}
	}
	return append(ps, Point{-1, FinalNorm})
}

// Parse reads one hook point name for a model with the given number of layers.
func Parse(name string, layers int) (Point, error) {
	switch name {
	case "hook_embed":
		return Point{-1, Embed}, nil
	case "ln_final.hook_normalized":
		return Point{-1, FinalNorm}, nil
	}
	rest, ok := strings.CutPrefix(name, "blocks.")
	if !ok {
		return Point{}, fmt.Errorf("unknown hook point %q (try blocks.0.hook_resid_post, hook_embed or ln_final.hook_normalized)", name)
	}
	num, suffix, ok := strings.Cut(rest, ".")
	layer, err := strconv.Atoi(num)
	if !ok || err != nil || num != strconv.Itoa(layer) {
		return Point{}, fmt.Errorf("unknown hook point %q: want blocks.<layer>.<hook>", name)
	}
	if layer < 0 || layer >= layers {
		return Point{}, fmt.Errorf("hook point %q: layer %d does not exist (the model has layers 0 to %d)", name, layer, layers-1)
	}
	for _, k := range layerKinds {
		if suffixes[k] == suffix {
			return Point{layer, k}, nil
		}
	}
	return Point{}, fmt.Errorf("unknown hook point %q: a layer has %s", name, strings.Join(layerSuffixes(), ", "))
}

func layerSuffixes() []string {
	out := make([]string, len(layerKinds))
	for i, k := range layerKinds {
		out[i] = suffixes[k]
	}
	return out
}

// Match returns the points whose names match a pattern, in forward order. A pattern is a name in
// which a dot-separated part may use shell wildcards (* ? [..]) within that part, e.g.
// "blocks.*.hook_resid_post" or "blocks.1?.attn.hook_z"; several patterns may be given separated
// by commas. A pattern that matches nothing is an error.
func Match(patterns string, layers int) ([]Point, error) {
	var out []Point
	seen := map[Point]bool{}
	for _, pat := range strings.Split(patterns, ",") {
		pat = strings.TrimSpace(pat)
		if pat == "" {
			continue
		}
		parts := strings.Split(pat, ".")
		n := 0
		for _, p := range All(layers) {
			if ok, err := matchParts(parts, strings.Split(p.Name(), ".")); err != nil {
				return nil, fmt.Errorf("hook pattern %q: %v", pat, err)
			} else if ok {
				n++
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("hook pattern %q matches no hook point of a %d-layer model", pat, layers)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty hook pattern")
	}
	order := map[Point]int{}
	for i, p := range All(layers) {
		order[p] = i
	}
	sortPoints(out, order)
	return out, nil
}

func matchParts(pat, name []string) (bool, error) {
	if len(pat) != len(name) {
		return false, nil
	}
	for i := range pat {
		ok, err := path.Match(pat[i], name[i])
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

func sortPoints(ps []Point, order map[Point]int) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && order[ps[j]] < order[ps[j-1]]; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// Dims are the model sizes that give each point its shape.
type Dims struct {
	Layers, DModel, Heads, KVHeads, DHead, DMLP int
}

// Shape is the point's activation shape for one sequence of pos positions (ctx positions of keys
// for the pattern; ctx = pos for a whole sequence).
func (d Dims) Shape(p Point, pos int) []int {
	switch p.Kind {
	case Q, Z:
		return []int{pos, d.Heads, d.DHead}
	case K, V:
		return []int{pos, d.KVHeads, d.DHead}
	case Pattern:
		return []int{d.Heads, pos, pos}
	case MLPPost:
		return []int{pos, d.DMLP}
	}
	return []int{pos, d.DModel}
}

// Width is the number of values one position holds at the point (for the pattern: per head and
// key, so the row width depends on the context and this returns heads).
func (d Dims) Width(p Point) int {
	switch p.Kind {
	case Q, Z:
		return d.Heads * d.DHead
	case K, V:
		return d.KVHeads * d.DHead
	case Pattern:
		return d.Heads
	case MLPPost:
		return d.DMLP
	}
	return d.DModel
}

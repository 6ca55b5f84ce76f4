package attrib

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/hooks"
)

// Kind is a type of node: a hook point and the part of its activation that one node patches.
type Kind uint8

const (
	ResidPre Kind = iota // blocks.L.hook_resid_pre at one position: (layer, pos)
	AttnOut              // blocks.L.hook_attn_out at one position: (layer, pos)
	MLPOut               // blocks.L.hook_mlp_out at one position: (layer, pos)
	Head                 // blocks.L.attn.hook_z, one head at every prompt position: (layer, head)
	HeadPos              // blocks.L.attn.hook_z, one head at one position: (layer, head, pos)
	Query                // blocks.L.attn.hook_q, one head at one position (AtP*'s QK fix): (layer, head, pos)
	Key                  // blocks.L.attn.hook_k, one kv head at one position (AtP*'s QK fix): (layer, kv_head, pos)
	numKinds
)

var kindNames = [numKinds]string{"resid_pre", "attn_out", "mlp_out", "head", "head_pos", "q", "k"}

func (k Kind) String() string { return kindNames[k] }

// ParseKind reads a kind's name as String writes it.
func ParseKind(s string) (Kind, error) {
	for k, n := range kindNames {
		if n == s {
			return Kind(k), nil
		}
	}
	return 0, fmt.Errorf("unknown node kind %q (want resid_pre, attn_out, mlp_out, head, head_pos, q or k)", s)
}

// hookKind is the hook point a kind's nodes live at.
func (k Kind) hookKind() hooks.Kind {
	switch k {
	case ResidPre:
		return hooks.ResidPre
	case AttnOut:
		return hooks.AttnOut
	case MLPOut:
		return hooks.MLPOut
	case Query:
		return hooks.Q
	case Key:
		return hooks.K
	}
	return hooks.Z
}

// Point is the hook point of the kind at a layer.
func (k Kind) Point(layer int) hooks.Point { return hooks.Point{Layer: layer, Kind: k.hookKind()} }

// perHead reports whether the kind's nodes are one head each.
func (k Kind) perHead() bool { return k == Head || k == HeadPos || k == Query || k == Key }

// perPos reports whether the kind's nodes are one position each.
func (k Kind) perPos() bool { return k != Head }

// DefaultKinds are the node kinds plain AtP scores; AtP* adds Query and Key.
var DefaultKinds = []Kind{ResidPre, AttnOut, MLPOut, Head, HeadPos}

// Node is one node: a kind at a layer, with a head (−1 where the kind has none) and a position
// (−1 where it has none). Positions index a Grid's columns.
type Node struct {
	Kind  Kind
	Layer int
	Head  int
	Pos   int
}

func (n Node) String() string {
	s := n.Kind.Point(n.Layer).Name()
	switch {
	case n.Kind.perHead() && n.Kind.perPos():
		return fmt.Sprintf("%s[head %d, pos %d]", s, n.Head, n.Pos)
	case n.Kind.perHead():
		return fmt.Sprintf("%s[head %d]", s, n.Head)
	}
	return fmt.Sprintf("%s[pos %d]", s, n.Pos)
}

// Grid holds one value per node of a kind, row-major over (layer, head, pos) with the axes the kind
// has. A grid's positions are a pair's prompt positions, or, for grids averaged over pairs of
// different lengths, offsets aligned at the end: column c is Positions−1−c tokens before the last.
// NaN marks a node with no value (not verified, or not present in a pair).
type Grid struct {
	Kind      Kind
	Layers    int
	Heads     int // 1 for kinds without heads
	Positions int // 1 for Head
	Data      []float64
}

// NewGrid makes a zeroed grid.
func NewGrid(k Kind, layers, heads, positions int) *Grid {
	if !k.perHead() {
		heads = 1
	}
	if !k.perPos() {
		positions = 1
	}
	return &Grid{Kind: k, Layers: layers, Heads: heads, Positions: positions, Data: make([]float64, layers*heads*positions)}
}

// NewGridNaN makes a grid with no values yet.
func NewGridNaN(k Kind, layers, heads, positions int) *Grid {
	g := NewGrid(k, layers, heads, positions)
	for i := range g.Data {
		g.Data[i] = math.NaN()
	}
	return g
}

// index is the node's offset in Data.
func (g *Grid) index(n Node) int {
	h, p := max(n.Head, 0), max(n.Pos, 0)
	return (n.Layer*g.Heads+h)*g.Positions + p
}

// At is the node's value.
func (g *Grid) At(n Node) float64 { return g.Data[g.index(n)] }

// Set stores the node's value.
func (g *Grid) Set(n Node, v float64) { g.Data[g.index(n)] = v }

// Node is the node at offset i of Data.
func (g *Grid) Node(i int) Node {
	n := Node{Kind: g.Kind, Layer: i / (g.Heads * g.Positions), Head: -1, Pos: -1}
	if g.Kind.perHead() {
		n.Head = i / g.Positions % g.Heads
	}
	if g.Kind.perPos() {
		n.Pos = i % g.Positions
	}
	return n
}

// Nodes lists every node of the grid in Data order.
func (g *Grid) Nodes() []Node {
	out := make([]Node, len(g.Data))
	for i := range out {
		out[i] = g.Node(i)
	}
	return out
}

// Scores are one method's grids, by kind (nil where the kind was not scored).
type Scores [numKinds]*Grid

// Method names an estimate of a node's effect.
type Method uint8

const (
	AtP      Method = iota // (a(corrupt) − a(clean)) · ∂M/∂a on the clean run
	AtPStar                // AtP with the QK fix: exact softmax for q and k nodes, then linear
	GradDrop               // AtP*'s GradDrop: a magnitude, mean over dropped layers of |estimate|
	Exact                  // activation patching: M(clean with the node patched) − M(clean)
	numMethods
)

var methodNames = [numMethods]string{"atp", "atp_star", "graddrop", "exact"}

func (m Method) String() string { return methodNames[m] }

//go:build cuda

package gpu

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/hooks"
	"github.com/tillerlm/tiller/tensor"
)

// AddTerms adds steering terms to activations in device memory (llama.SteerBackend): row i of x
// (n, …) += Σ_t terms[t].Alpha[i]·terms[t].Vector, summed on the device (steer_add_f32) from the
// vectors' device copies (Backend.vector) and the staged strengths — no rows cross the bus.
func (b *Backend) AddTerms(x *tensor.Tensor, terms []hooks.Term) {
	f32("steering", x)
	n := x.Rows()
	width := x.Numel() / max(n, 1)
	if len(terms) == 0 || n == 0 {
		return
	}
	b.trimVectors()
	words := make([]int32, 2*len(terms)+len(terms)*n)
	for t, term := range terms {
		if len(term.Vector) != width || len(term.Alpha) != n {
			panic(fmt.Sprintf("gpu: steering term of %d values and %d strengths for %v", len(term.Vector), len(term.Alpha), x.Shape))
		}
		addr := b.vector(term.Vector)
		words[2*t], words[2*t+1] = int32(uint32(addr)), int32(uint32(addr>>32))
		for i, a := range term.Alpha {
			words[2*len(terms)+t*n+i] = int32(math.Float32bits(a))
		}
	}
	defer b.enter()()
	base := b.ints(words)
	b.steerAdd(dev(x), base, base+uint64(8*len(terms)), n, width, len(terms))
	b.done("steering")
}

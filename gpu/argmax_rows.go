//go:build cuda

package gpu

import (
	"fmt"
	"unsafe"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
)

var _ llama.RowArgmax = (*Backend)(nil)

// ArgmaxRows writes the index of the largest value of each row of x, a device (rows, d) F32
// tensor, into dst (the lowest index on ties, as the CPU's greedy sampler): a batch decoded
// greedily downloads one id per row rather than its logits (128256 floats per row at Llama 3's
// vocabulary).
func (b *Backend) ArgmaxRows(dst []int32, x *tensor.Tensor) {
	rows, d := x.Rows(), x.Cols()
	if x.DType != tensor.F32 || x.OnHost() || len(dst) != rows {
		panic(fmt.Sprintf("gpu: argmax of the rows of %v (device %v) into %d ids", x, !x.OnHost(), len(dst)))
	}
	if rows == 0 {
		return
	}
	var ids *tensor.Tensor
	func() {
		defer b.enter()()
		ids = b.scratch("argmax ids", rows)
		ids.DType = tensor.I32
		b.argmax(dev(ids), dev(x), rows, d)
		b.done("argmax rows")
	}()
	host := &tensor.Tensor{Shape: []int{rows}, DType: tensor.I32, Data: unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*rows)}
	b.Download(host, ids)
	b.Free(ids)
}

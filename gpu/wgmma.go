//go:build cuda

package gpu

// The Hopper prefill GEMM (kernels/gemm_wgmma.cu): its operands reach shared memory through the
// tensor memory accelerator, which reads each tile as a tensor map encodes it. gorgonia.org/cu
// v0.9.6 has no cuTensorMapEncodeTiled, so the maps are encoded here and passed by value, 128
// bytes each, as the kernel's last two parameters: a launch that args' 8-byte slots cannot carry.

// #cgo LDFLAGS: -lcuda
// #include <cuda.h>
//
// // encode_rows maps a row-major bf16 matrix of rows × k at base (16-byte aligned, k % 8 == 0):
// // boxes of box_rows rows × 64 k, 128 bytes a row, in TMA's 128-byte swizzle (the layout the
// // kernel's wgmma descriptors read), elements past the matrix read as zeros.
// static CUresult encode_rows(CUtensorMap* map, CUdeviceptr base, cuuint64_t rows, cuuint64_t k, cuuint32_t box_rows) {
// 	cuuint64_t dim[2] = {k, rows};
// 	cuuint64_t stride[1] = {k * 2};
// 	cuuint32_t box[2] = {64, box_rows};
// 	cuuint32_t elem[2] = {1, 1};
// 	return cuTensorMapEncodeTiled(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void*)base, dim, stride, box, elem,
// 		CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
// 		CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
// }
//
// // gemm_wgmma_launch queues f = gemm_wgmma_bf16(y, bias, m, n, k, xmap, wmap) with grid (gx, gy),
// // 384 threads and shared bytes of dynamic shared memory; stage says which step failed (0: the
// // map of x, 1: the map of w, 2: the launch). The driver copies the parameters at the call.
// static CUresult gemm_wgmma_launch(CUfunction f, CUstream s, unsigned gx, unsigned gy, unsigned shared, CUdeviceptr y,
// 	CUdeviceptr x, CUdeviceptr w, CUdeviceptr bias, int m, int n, int k, int* stage) {
// 	CUtensorMap xmap, wmap;
// 	*stage = 0;
// 	CUresult r = encode_rows(&xmap, x, m, k, 128);
// 	if (r != CUDA_SUCCESS) return r;
// 	*stage = 1;
// 	if ((r = encode_rows(&wmap, w, n, k, 256)) != CUDA_SUCCESS) return r;
// 	*stage = 2;
// 	void* params[] = {&y, &bias, &m, &n, &k, &xmap, &wmap};
// 	return cuLaunchKernel(f, gx, gy, 1, 384, 1, 1, shared, s, params, NULL);
// }
import "C"
import (
	"fmt"

	"github.com/tillerlm/tiller/tensor"
)

// The tile of gemm_wgmma_bf16 (WG_BM × WG_BN) and its dynamic shared memory, WG_SMEM: 4 stages of
// (128 + 256) rows × 64 bf16, 8 mbarriers, 1 KiB to align the stages.
const (
	wgmmaRows   = 128
	wgmmaCols   = 256
	wgmmaShared = 4*(wgmmaRows+wgmmaCols)*64*2 + 2*4*8 + 1024
)

// wgmmaKernel is gemm_wgmma_bf16, loaded the first time it is asked for on a card of compute
// capability 9.0 (its PTX targets sm_90a), or nil: on other cards, or when the driver cannot load
// it (WGMMAError says why; the products then run gemm_pipe_*).
func (b *Backend) wgmmaKernel() *kernel {
	if b.cc != 90 {
		return nil
	}
	if b.wgmma == nil && b.wgmmaErr == nil {
		b.wgmma, b.wgmmaErr = b.loadKernel("gemm_wgmma", "gemm_wgmma_bf16")
	}
	return b.wgmma
}

// WGMMAError is why the Hopper GEMM could not be loaded, or nil (not tried, or loaded).
func (b *Backend) WGMMAError() error { return b.wgmmaErr }

// HasWGMMA says whether products can run gemm_wgmma_bf16 on this card, loading it if it was not
// yet: a card of compute capability 9.0 whose driver loads its sm_90a PTX (WGMMAError says why not).
func (b *Backend) HasWGMMA() bool {
	defer b.enter()()
	return b.wgmmaKernel() != nil
}

// useWGMMA says whether gemm sends a product of m rows with weights w to gemmWGMMA: WGMMAGEMM set,
// bf16 weights, more rows than the split-K GEMM takes (or split-K turned off), rows of 16 bytes
// (the tensor maps' strides) and not Deterministic (gemmInvariant has its own kernels; this one's
// order of summation does not depend on the batch, but it is not theirs).
func (b *Backend) useWGMMA(w *tensor.Tensor, x uint64, m, kdim int) bool {
	return b.WGMMAGEMM && !b.Deterministic && w.DType == tensor.BF16 && !b.useSplitK(w, x, m, kdim) && kdim%8 == 0 &&
		vectorOK(w, x, kdim) && b.wgmmaKernel() != nil
}

// gemmWGMMA computes y (m, n) = xs (m, k) · wᵀ + bias from xs already rounded to bf16 (round16).
func (b *Backend) gemmWGMMA(y, xs uint64, w, bias *tensor.Tensor, m, n, kdim int) {
	k := b.wgmmaKernel()
	gx, gy := (m+wgmmaRows-1)/wgmmaRows, (n+wgmmaCols-1)/wgmmaCols
	if !b.ready(k, gx, gy, 1, wgmmaShared) {
		return
	}
	var stage C.int
	r := C.gemm_wgmma_launch(rawFunction(k.fn), rawStream(b.stream), C.uint(gx), C.uint(gy), C.uint(wgmmaShared), C.CUdeviceptr(y),
		C.CUdeviceptr(xs), C.CUdeviceptr(dev(w)), C.CUdeviceptr(dev(bias)), C.int(m), C.int(n), C.int(kdim), &stage)
	call := [...]string{"cuTensorMapEncodeTiled (x)", "cuTensorMapEncodeTiled (w)", "cuLaunchKernel"}[stage]
	if err := driverError(call, r); err != nil {
		panic(fmt.Sprintf("gpu: gemm_wgmma_bf16 (M=%d N=%d K=%d, grid %d×%d): %v", m, n, kdim, gx, gy, err))
	}
}

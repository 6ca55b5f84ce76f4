//go:build cuda

package gpu

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	_ "github.com/tillerlm/tiller/gpu/cuinit" // must initialise the driver before gorgonia.org/cu
	"github.com/tillerlm/tiller/tensor"
	"gorgonia.org/cu"
)

// ErrNoDevice is what New returns on a machine whose driver sees no GPU.
var ErrNoDevice = errors.New("no CUDA device")

// Backend runs tensor.Backend ops on device 0 through its primary context, in one stream: ops
// are queued asynchronously and ordered by the stream; Download waits for them. Driver errors
// inside an op panic with the op's name (the Backend interface has no error results, and a
// failed launch leaves the context unusable); New, AllocErr and the graph and timing helpers
// return errors.
//
// Not safe for concurrent use, like every tensor.Backend.
type Backend struct {
	dev    cu.Device
	ctx    cu.CUContext
	stream cu.Stream
	name   string
	sms    int
	cc     int // compute capability, major·10 + minor (90 for Hopper)

	pool    *pool
	stage   staging
	modules map[string]cu.Module
	kernels map[string]*kernel
	args    args

	capturing bool                        // a graph is being recorded: nothing may synchronise or stage host arrays
	arena     *arena                      // when set, the temporaries of the ops queued (scratch) come from it
	syncs     int                         // times the host waited for the stream (Download, Sync): staged copies are done
	attnCount *tensor.Tensor              // the ops' decode attention counters, zero between launches
	vecs      map[*float32]*tensor.Tensor // steering vectors on the device, by their host slice (vector)
	dry       bool                        // launches are skipped: a dry run loads the modules a graph will need
	pdl       bool                        // launch kernels that wait on their predecessor (kernel.pdl) with programmatic dependent launch
	timing    *stepTimer                  // when set, an event is recorded before every launch (the profiler)
	wgmma     *kernel                     // gemm_wgmma_bf16 once loaded (wgmmaKernel)
	wgmmaErr  error                       // why it could not be loaded

	// SplitK selects the split-K GEMV kernels (kernels/matvec.cu, compute_90) for products of
	// ≤ 8 tokens; false selects the row-per-warp kernels of kernels/gemv.cu. New sets it on
	// cards of compute capability ≥ 9.0 unless the environment says TILLER_GPU_GEMV=rows.
	SplitK bool

	// PipeGEMM selects, for products of more than 8 tokens with 16-bit weights, the 4-stage
	// cp.async kernel on x rounded to 16 bits beforehand (kernels/gemm.cu, gemm_pipe_*); false
	// the double-buffered gemm_* that rounds x as it stages it. True unless the environment says
	// TILLER_GPU_GEMM=staged.
	PipeGEMM bool

	// WGMMAGEMM selects, for products past the split-K GEMM's rows with bf16 weights, the Hopper
	// kernel (kernels/gemm_wgmma.cu: TMA loads, warpgroup wgmma, compute_90a) on x rounded to bf16,
	// ahead of PipeGEMM's choice. New sets it on cards of compute capability 9.0 unless the
	// environment says TILLER_GPU_GEMM=pipe (or staged); where the driver cannot load the kernel
	// the products fall back to PipeGEMM's choice (WGMMAError says why).
	WGMMAGEMM bool

	// NoSplitKGEMM sends products of 9–128 rows with 16-bit weights to the prefill GEMM (PipeGEMM's
	// choice) instead of the split-K one that streams W once (kernels/gemm.cu, gemm_splitk_*): the
	// comparison that benchmarks and tests make. False by default.
	NoSplitKGEMM bool

	// ExactAttention keeps prefill attention in f32 (kernels/attention.cu's attention_prefill_f32_*)
	// where the tensor-core kernel (attention_prefill_mma_bf16_*, q, k, v and the softmax weights
	// rounded to bf16) would apply. False by default; checks of f32 checkpoints against the CPU at
	// f32 precision set it, and the environment variable TILLER_GPU_ATTENTION=f32 sets it.
	ExactAttention bool

	// ExactMatMul keeps matrix products of more than 8 rows at f32 precision: bf16 weights on
	// tensor cores with x cut into three exact bf16 pieces (kernels/gemm_exact.cu), other weights
	// with f32 FMA tiles, where the inference GEMMs round x to 16 bits (products of ≤ 8 rows are
	// f32 already). With ExactAttention it is the analysis precision that attribution and
	// gradients run at (SetAnalysis); the backward pass is at f32 precision either way. False by
	// default; the environment variable TILLER_GPU_MATMUL=exact sets it.
	ExactMatMul bool

	// Deterministic computes every row of a batch as it would be computed alone (invariant.go):
	// one kernel and one order of summation per op whatever the batch size. False by default;
	// llama.Runner.SetDeterministic sets it (SetBatchInvariant).
	Deterministic bool

	// SyncEachOp makes every op wait for the device and check its errors, so that a fault (an
	// illegal address, say) is reported by the op that caused it rather than by a later one.
	// Slow; tests set it. The environment variable TILLER_GPU_SYNC=1 sets it too.
	SyncEachOp bool

	// OpTimes, when not nil, makes every op wait for the device and adds the op's time, from its
	// call to its completion, under its name: a profile of a Runner's ops, which run outside
	// CUDA graphs and so outside the Decoder's profile. Slow, like SyncEachOp.
	OpTimes map[string]time.Duration
	opStart time.Time
}

var _ tensor.Backend = (*Backend)(nil)

// New opens device 0. It returns ErrNoDevice (wrapped with the driver's reason) when there is
// none.
func New() (*Backend, error) {
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("%w: cuDeviceGetCount: %v", ErrNoDevice, err)
	}
	if n == 0 {
		return nil, ErrNoDevice
	}
	dev, err := cu.GetDevice(0)
	if err != nil {
		return nil, fmt.Errorf("gpu: cuDeviceGet(0): %v", err)
	}
	ctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		return nil, fmt.Errorf("gpu: cuDevicePrimaryCtxRetain: %v", err)
	}
	b := &Backend{dev: dev, ctx: ctx, modules: map[string]cu.Module{}, kernels: map[string]*kernel{}}
	b.SyncEachOp = os.Getenv("TILLER_GPU_SYNC") == "1"
	defer b.enter()()
	if b.stream, err = cu.MakeStream(cu.NonBlocking); err != nil {
		dev.ReleasePrimaryCtx()
		return nil, fmt.Errorf("gpu: cuStreamCreate: %v", err)
	}
	b.name, _ = dev.Name()
	b.sms, _ = dev.Attribute(cu.MultiprocessorCount)
	major, _ := dev.Attribute(cu.ComputeCapabilityMajor)
	minor, _ := dev.Attribute(cu.ComputeCapabilityMinor)
	b.cc = 10*major + minor
	b.SplitK = b.cc >= 90 && os.Getenv("TILLER_GPU_GEMV") != "rows"
	b.ExactAttention = os.Getenv("TILLER_GPU_ATTENTION") == "f32"
	b.ExactMatMul = os.Getenv("TILLER_GPU_MATMUL") == "exact"
	b.PipeGEMM = os.Getenv("TILLER_GPU_GEMM") != "staged"
	b.WGMMAGEMM = b.cc == 90 && os.Getenv("TILLER_GPU_GEMM") != "staged" && os.Getenv("TILLER_GPU_GEMM") != "pipe"
	b.pool = newPool()
	if err := b.stage.init(1 << 20); err != nil {
		b.Close()
		return nil, fmt.Errorf("gpu: staging buffer: %v", err)
	}
	return b, nil
}

// BF16KVCache reports that the backend stores and attends over a BF16 KV cache under F32
// activations (llama.Runner.SetPrecision): StoreKV rounds to it, Attention widens from it.
func (b *Backend) BF16KVCache() bool { return true }

// SetAnalysis puts the backend in analysis precision: every product and attention in f32
// (ExactMatMul, ExactAttention), so that activations, patched runs and gradients match the CPU's
// f32 results to f32 tolerance. Attribution, gradients and activation caches run this way.
func (b *Backend) SetAnalysis() { b.ExactMatMul, b.ExactAttention = true, true }

// Name is the device's name, e.g. "NVIDIA H100 80GB HBM3"; SMs its multiprocessor count;
// ComputeCapability major·10 + minor (90 for Hopper).
func (b *Backend) Name() string           { return b.name }
func (b *Backend) SMs() int               { return b.sms }
func (b *Backend) ComputeCapability() int { return b.cc }

// FreeMemory is the device memory allocations can still get: what the driver reports free and the
// blocks the pool keeps for reuse.
func (b *Backend) FreeMemory() int64 {
	defer b.enter()()
	free, _, err := cu.MemInfo()
	if err != nil {
		panic(fmt.Sprintf("gpu: cuMemGetInfo: %v", err))
	}
	return free + b.pool.cached
}

// Close frees everything the backend holds. Tensors it allocated must not be used afterwards.
func (b *Backend) Close() {
	defer b.enter()()
	b.stream.Synchronize()
	b.stage.free()
	b.pool.release()
	for _, m := range b.modules {
		m.Unload()
	}
	b.stream.Destroy()
	b.dev.ReleasePrimaryCtx()
}

// enter makes the backend's context current on this goroutine's OS thread for the duration of a
// call: `defer b.enter()()`. Goroutines move between threads and a context is current per thread.
func (b *Backend) enter() func() {
	if b.OpTimes != nil {
		b.opStart = time.Now()
	}
	runtime.LockOSThread()
	if err := cu.SetCurrentContext(b.ctx); err != nil {
		runtime.UnlockOSThread()
		panic(fmt.Sprintf("gpu: cuCtxSetCurrent: %v", err))
	}
	return runtime.UnlockOSThread
}

// done ends an op: with SyncEachOp, it waits for the device and names the op in any error.
func (b *Backend) done(op string) {
	if !b.SyncEachOp && b.OpTimes == nil || b.capturing {
		return
	}
	if err := b.stream.Synchronize(); err != nil {
		panic(fmt.Sprintf("gpu: %s failed on the device: %v", op, err))
	}
	if b.OpTimes != nil {
		b.OpTimes[op] += time.Since(b.opStart)
	}
}

func must(what string, err error) {
	if err != nil {
		panic(fmt.Sprintf("gpu: %s: %v", what, err))
	}
}

// Sync waits until everything queued so far has run, and returns the first error it hit.
func (b *Backend) Sync() error {
	defer b.enter()()
	if err := b.stream.Synchronize(); err != nil {
		return fmt.Errorf("gpu: %v", err)
	}
	b.syncs++
	b.stage.reset()
	return nil
}

// Alloc returns a zeroed tensor in device memory; it panics when the device is out of memory
// (AllocErr returns that error instead).
func (b *Backend) Alloc(dtype tensor.DType, shape ...int) *tensor.Tensor {
	t, err := b.AllocErr(fmt.Sprintf("%s%v", dtype, shape), dtype, shape...)
	if err != nil {
		panic(err.Error())
	}
	return t
}

// AllocErr is Alloc with an error naming the allocation (what) when the memory is not there.
func (b *Backend) AllocErr(what string, dtype tensor.DType, shape ...int) (*tensor.Tensor, error) {
	defer b.enter()()
	t := &tensor.Tensor{Shape: append([]int(nil), shape...), DType: dtype}
	bytes := int64(t.Numel() * dtype.Size())
	p, err := b.pool.get(bytes, what)
	if err != nil {
		return nil, err
	}
	t.Dev = uint64(p)
	if bytes > 0 {
		must("cuMemsetD8Async", cu.MemsetD8Async(p, 0, bytes, b.stream))
	}
	return t, nil
}

// scratch is an uninitialised F32 tensor of n elements from the pool, for an op's temporaries.
func (b *Backend) scratch(what string, n int) *tensor.Tensor {
	if b.arena != nil {
		return &tensor.Tensor{Shape: []int{n}, DType: tensor.F32, Dev: b.arena.take(int64(4 * n))}
	}
	p, err := b.pool.get(int64(4*n), what)
	if err != nil {
		panic(err.Error())
	}
	return &tensor.Tensor{Shape: []int{n}, DType: tensor.F32, Dev: uint64(p)}
}

// Free returns a tensor made by Alloc or Upload to the pool (not a view of one). Work already
// queued that reads it still runs first: the pool hands memory out again only to later work on
// the same stream.
func (b *Backend) Free(t *tensor.Tensor) {
	if t == nil || t.Dev == 0 {
		return
	}
	if b.arena != nil && b.arena.owns(t.Dev) {
		t.Dev = 0
		return
	}
	b.pool.put(cu.DevicePtr(t.Dev))
	t.Dev = 0
}

// Upload copies a host tensor into device memory; a device tensor is returned as it is.
func (b *Backend) Upload(t *tensor.Tensor) *tensor.Tensor {
	if !t.OnHost() {
		return t
	}
	d := b.Alloc(t.DType, t.Shape...)
	defer b.enter()()
	if len(t.Data) > 0 {
		must("cuMemcpyHtoDAsync (upload)", cu.MemcpyHtoDAsync(cu.DevicePtr(d.Dev), unsafe.Pointer(&t.Data[0]), int64(len(t.Data)), b.stream))
		// The source is Go (or mapped) memory: wait, so that it may change as soon as we return.
		must("upload", b.stream.Synchronize())
	}
	return d
}

// Download copies a device tensor into a host tensor of the same dtype and size, waiting for
// every op queued before it.
func (b *Backend) Download(dst, src *tensor.Tensor) {
	if dst.DType != src.DType || dst.Numel() != src.Numel() || !dst.OnHost() || src.OnHost() {
		panic(fmt.Sprintf("gpu: download of %v (device %v) into %v (host %v)", src, !src.OnHost(), dst, dst.OnHost()))
	}
	if b.capturing {
		panic("gpu: Download during graph capture")
	}
	defer b.enter()()
	if len(dst.Data) > 0 {
		must("cuMemcpyDtoHAsync (download)", cu.MemcpyDtoHAsync(unsafe.Pointer(&dst.Data[0]), cu.DevicePtr(src.Dev), int64(len(dst.Data)), b.stream))
	}
	if err := b.stream.Synchronize(); err != nil {
		panic(fmt.Sprintf("gpu: download (or an op queued before it) failed on the device: %v", err))
	}
	b.syncs++
	b.stage.reset()
}

// CopyTo copies a host slice of int32 into a device I32 tensor of the same length.
func (b *Backend) CopyTo(dst *tensor.Tensor, v []int32) {
	if dst.DType != tensor.I32 || dst.Numel() != len(v) || dst.OnHost() {
		panic(fmt.Sprintf("gpu: copy of %d int32 into %v", len(v), dst))
	}
	if len(v) == 0 {
		return
	}
	defer b.enter()()
	must("cuMemcpyHtoDAsync", cu.MemcpyHtoDAsync(cu.DevicePtr(dst.Dev), unsafe.Pointer(&v[0]), int64(4*len(v)), b.stream))
	must("copy", b.stream.Synchronize())
}

// copyF32 copies a host slice of float32 into a device F32 tensor of the same length.
func (b *Backend) copyF32(dst *tensor.Tensor, v []float32) {
	if dst.DType != tensor.F32 || dst.Numel() != len(v) || dst.OnHost() {
		panic(fmt.Sprintf("gpu: copy of %d float32 into %v", len(v), dst))
	}
	if len(v) == 0 {
		return
	}
	defer b.enter()()
	must("cuMemcpyHtoDAsync", cu.MemcpyHtoDAsync(cu.DevicePtr(dst.Dev), unsafe.Pointer(&v[0]), int64(4*len(v)), b.stream))
	must("copy", b.stream.Synchronize())
}

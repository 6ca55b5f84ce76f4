//go:build cuda

package gpu

// What gorgonia.org/cu v0.9.6 lacks, called directly: the dynamic shared-memory limit of a
// function, pinned host memory, stream capture into a CUDA graph with its instantiation and
// launch, and cuLaunchKernelEx for programmatic dependent launch. cu's handle types wrap the raw driver handles as their only field; rawStream and
// rawFunction read them out (cgo types of another package cannot be named here).

// #cgo LDFLAGS: -lcuda
// #include <string.h>
// #include <cuda.h>
//
// // launch_ex queues f through cuLaunchKernelEx. Its parameters are nargs 8-byte slots at args
// // (Go memory holding no pointers, so cgo lets it through); a kernel reads from each slot as
// // many bytes as it declares. With pdl set, the launch carries the programmatic-stream-
// // serialization attribute: f may start before the kernel ahead of it in the stream ends, and
// // must call griddepcontrol.wait before it touches anything that kernel writes.
// static CUresult launch_ex(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned threads,
//                           unsigned shared, CUstream s, unsigned long long* args, int nargs, int pdl) {
// 	void* params[32];
// 	for (int i = 0; i < nargs && i < 32; i++) params[i] = &args[i];
// 	CUlaunchAttribute attr;
// 	memset(&attr, 0, sizeof attr);
// 	attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
// 	attr.value.programmaticStreamSerializationAllowed = 1;
// 	CUlaunchConfig cfg;
// 	memset(&cfg, 0, sizeof cfg);
// 	cfg.gridDimX = gx, cfg.gridDimY = gy, cfg.gridDimZ = gz;
// 	cfg.blockDimX = threads, cfg.blockDimY = 1, cfg.blockDimZ = 1;
// 	cfg.sharedMemBytes = shared;
// 	cfg.hStream = s;
// 	cfg.attrs = pdl ? &attr : NULL;
// 	cfg.numAttrs = pdl ? 1 : 0;
// 	return cuLaunchKernelEx(&cfg, f, params, NULL);
// }
import "C"
import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// driverError names a failed driver call with the driver's own name for the code.
func driverError(call string, r C.CUresult) error {
	if r == C.CUDA_SUCCESS {
		return nil
	}
	var name *C.char
	if C.cuGetErrorName(r, &name) == C.CUDA_SUCCESS {
		return fmt.Errorf("%s: %s", call, C.GoString(name))
	}
	return fmt.Errorf("%s: CUresult %d", call, int(r))
}

func rawStream(s cu.Stream) C.CUstream { return *(*C.CUstream)(unsafe.Pointer(&s)) }

func rawFunction(f cu.Function) C.CUfunction { return *(*C.CUfunction)(unsafe.Pointer(&f)) }

// setMaxDynamicShared lets f use more than the default 48 KiB of dynamic shared memory, and
// prefers the largest shared-memory carveout of L1 for it, so that several such blocks fit on a
// multiprocessor (gemm_pipe_*: two of 80 KiB).
func setMaxDynamicShared(f cu.Function, bytes int) error {
	if err := driverError("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
		C.cuFuncSetAttribute(rawFunction(f), C.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, C.int(bytes))); err != nil {
		return err
	}
	return driverError("cuFuncSetAttribute(PREFERRED_SHARED_MEMORY_CARVEOUT)",
		C.cuFuncSetAttribute(rawFunction(f), C.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, C.CU_SHAREDMEM_CARVEOUT_MAX_SHARED))
}

// hostAlloc returns bytes of pinned (page-locked) host memory, which async copies read directly.
func hostAlloc(bytes int) ([]byte, error) {
	var p unsafe.Pointer
	if err := driverError("cuMemHostAlloc", C.cuMemHostAlloc(&p, C.size_t(bytes), 0)); err != nil {
		return nil, fmt.Errorf("%w (%d bytes of pinned host memory)", err, bytes)
	}
	return unsafe.Slice((*byte)(p), bytes), nil
}

func hostFree(b []byte) {
	if len(b) > 0 {
		C.cuMemFreeHost(unsafe.Pointer(&b[0]))
	}
}

// graphExec is an instantiated CUDA graph.
type graphExec struct {
	graph C.CUgraph
	exec  C.CUgraphExec
}

// beginCapture starts recording s's work into a graph. Relaxed mode: other threads' driver calls
// are not checked against the capture (we make none that touch the stream meanwhile).
func beginCapture(s cu.Stream) error {
	return driverError("cuStreamBeginCapture", C.cuStreamBeginCapture(rawStream(s), C.CU_STREAM_CAPTURE_MODE_RELAXED))
}

// endCapture stops recording and instantiates what was recorded.
func endCapture(s cu.Stream) (*graphExec, error) {
	var g graphExec
	if err := driverError("cuStreamEndCapture", C.cuStreamEndCapture(rawStream(s), &g.graph)); err != nil {
		return nil, err
	}
	if err := driverError("cuGraphInstantiateWithFlags", C.cuGraphInstantiateWithFlags(&g.exec, g.graph, 0)); err != nil {
		C.cuGraphDestroy(g.graph)
		return nil, err
	}
	return &g, nil
}

func (g *graphExec) launch(s cu.Stream) error {
	return driverError("cuGraphLaunch", C.cuGraphLaunch(g.exec, rawStream(s)))
}

func (g *graphExec) destroy() {
	C.cuGraphExecDestroy(g.exec)
	C.cuGraphDestroy(g.graph)
}

// launchEx queues f with the parameters in slots (8 bytes each, see args), through
// cuLaunchKernelEx; pdl asks for programmatic dependent launch (launch_ex above).
func launchEx(f cu.Function, gx, gy, gz, threads, shared int, s cu.Stream, slots []uint64, pdl bool) error {
	var p *C.ulonglong
	if len(slots) > 0 {
		p = (*C.ulonglong)(unsafe.Pointer(&slots[0]))
	}
	flag := C.int(0)
	if pdl {
		flag = 1
	}
	return driverError("cuLaunchKernelEx", C.launch_ex(rawFunction(f), C.uint(gx), C.uint(gy), C.uint(gz), C.uint(threads), C.uint(shared),
		rawStream(s), p, C.int(len(slots)), flag))
}

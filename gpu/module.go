//go:build cuda

package gpu

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/tillerlm/tiller/kernels"
	"gorgonia.org/cu"
)

// kernel is one entry point of a loaded module.
type kernel struct {
	name    string
	fn      cu.Function
	dynamic int  // dynamic shared memory the function has been allowed beyond 48 KiB
	pdl     bool // it calls pdl_wait before touching what earlier kernels write (kernels/common.cuh)
}

// pdlFamilies are the op families whose every kernel waits on its predecessor with pdl_wait
// before reading or writing anything but weights, so that they may be launched with
// programmatic dependent launch; the others must never be.
var pdlFamilies = map[string]bool{"matvec": true, "decode": true}

// kernel returns an entry point, loading its op family's PTX module the first time (the driver
// JIT-compiles it for the card then; later calls are map lookups).
func (b *Backend) kernel(family, name string) *kernel {
	k, err := b.loadKernel(family, name)
	if err != nil {
		panic("gpu: " + err.Error())
	}
	return k
}

// loadKernel is kernel with the failure to load returned: for a family that not every card can
// load (gemm_wgmma's sm_90a PTX), whose caller falls back to another kernel.
func (b *Backend) loadKernel(family, name string) (*kernel, error) {
	if k, ok := b.kernels[name]; ok {
		return k, nil
	}
	m, ok := b.modules[family]
	if !ok {
		src, err := kernels.PTX(family)
		must("module", err)
		if m, err = cu.LoadData(src); err != nil {
			return nil, fmt.Errorf("loading the %s kernels (cuModuleLoadData, PTX JIT): %v", family, err)
		}
		b.modules[family] = m
	}
	fn, err := m.Function(name)
	if err != nil {
		return nil, fmt.Errorf("kernel %s not in the %s module: %v", name, family, err)
	}
	k := &kernel{name: name, fn: fn, pdl: pdlFamilies[family]}
	b.kernels[name] = k
	return k, nil
}

// args holds a launch's kernel parameters, one 8-byte slot each. gorgonia/cu's Function.Launch
// copies 8 bytes from every pointer it is given, whatever the parameter's size; the driver then
// reads as many bytes as the kernel declares. So a 4-byte parameter must sit in the low half of
// an 8-byte slot (little-endian), never in a 4-byte Go variable, which cu would read past. Only
// pointers (u64) and 4-byte ints and floats are used, which is all the kernels take.
type args struct {
	slot [32]uint64
	ptr  [32]unsafe.Pointer
	n    int
}

func (a *args) reset() *args { a.n = 0; return a }

func (a *args) put(v uint64) *args {
	if a.n == len(a.slot) {
		panic("gpu: more than 32 kernel parameters")
	}
	a.slot[a.n] = v
	a.n++
	return a
}

// p is a device pointer (0 for a null pointer).
func (a *args) p(v uint64) *args { return a.put(v) }

// i is an int parameter; it must fit in 32 bits.
func (a *args) i(v int) *args {
	if v != int(int32(v)) {
		panic(fmt.Sprintf("gpu: kernel parameter %d does not fit an int", v))
	}
	return a.put(uint64(uint32(int32(v))))
}

// f is a float parameter.
func (a *args) f(v float32) *args { return a.put(uint64(math.Float32bits(v))) }

// u64 is an unsigned long long parameter.
func (a *args) u64(v uint64) *args { return a.put(v) }

// launch queues kernel k on the backend's stream with grid (gx, gy, gz), block threads and
// shared bytes of dynamic shared memory, with the parameters in b.args.
func (b *Backend) launch(k *kernel, gx, gy, gz, threads, shared int) {
	if !b.ready(k, gx, gy, gz, shared) {
		return
	}
	a := &b.args
	if k.pdl {
		// cuLaunchKernelEx, with programmatic dependent launch when the caller asks for it.
		if err := launchEx(k.fn, gx, gy, gz, threads, shared, b.stream, a.slot[:a.n], b.pdl); err != nil {
			panic(fmt.Sprintf("gpu: launching %s (grid %d×%d×%d, %d threads, %d B shared, pdl %v): %v", k.name, gx, gy, gz, threads, shared, b.pdl, err))
		}
		return
	}
	for i := 0; i < a.n; i++ {
		a.ptr[i] = unsafe.Pointer(&a.slot[i])
	}
	if err := k.fn.Launch(gx, gy, gz, threads, 1, 1, shared, b.stream, a.ptr[:a.n]); err != nil {
		panic(fmt.Sprintf("gpu: launching %s (grid %d×%d×%d, %d threads, %d B shared): %v", k.name, gx, gy, gz, threads, shared, err))
	}
}

// ready does what comes before every launch of k: false for an empty problem or a dry run (which
// only loads modules), else it allows k shared bytes of dynamic shared memory and marks the
// launch for the profiler.
func (b *Backend) ready(k *kernel, gx, gy, gz, shared int) bool {
	if gx <= 0 || gy <= 0 || gz <= 0 || b.dry {
		return false
	}
	if shared > 48<<10 && shared > k.dynamic {
		must(k.name, setMaxDynamicShared(k.fn, shared))
		k.dynamic = shared
	}
	if b.timing != nil {
		b.timing.mark(b, k.name)
	}
	return true
}

//go:build cuda

package gpu

import (
	"runtime"
	"testing"

	"github.com/tillerlm/tiller/tensor"
	"gorgonia.org/cu"
)

// onBareThread runs f on an OS thread with no current CUDA context, as a goroutine that the Go
// scheduler puts on a thread that never touched the device sees it: every driver call of f's
// backend must make its context current first (Backend.enter), allocations and frees included.
func onBareThread(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cu.SetCurrentContext(cu.CUContext{}); err != nil {
			t.Errorf("clearing the thread's context: %v", err)
			return
		}
		if c, err := cu.CurrentContext(); err != nil || c != (cu.CUContext{}) {
			t.Errorf("the thread still has a context (%v, %v)", c, err)
			return
		}
		f()
	}()
	<-done
}

// CopyBandwidth and ArgmaxRows allocate, launch and free with the backend's context current
// (commit 04bf4ea), each called on a thread that had none: before, they allocated first and got
// CUDA_ERROR_INVALID_CONTEXT there.
func TestNoCurrentContext(t *testing.T) {
	b := newBackend(t)
	onBareThread(t, func() {
		gbps, ms, err := b.CopyBandwidth(64<<20, 3)
		if err != nil || !(gbps > 0) || !(ms > 0) {
			t.Errorf("CopyBandwidth with no current context: %.1f GB/s, %.3f ms, %v", gbps, ms, err)
		}
	})
	// Rows whose largest value (96) first appears at a different column each: 96, 66, 36.
	const rows, d = 3, 1000
	x := make([]float32, rows*d)
	for i := range x {
		x[i] = float32(i % 97)
	}
	want := []int32{96, 66, 36}
	xd := b.Upload(tensor.FromF32(x, rows, d))
	defer b.Free(xd)
	got := make([]int32, rows)
	onBareThread(t, func() { b.ArgmaxRows(got, xd) })
	for r := range rows {
		if got[r] != want[r] {
			t.Errorf("ArgmaxRows with no current context: row %d gives %d, want %d", r, got[r], want[r])
		}
	}
}

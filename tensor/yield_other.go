//go:build !linux

package tensor

import "runtime"

// yield lets other goroutines run; elsewhere than Linux the spin does not call the OS.
func yield() { runtime.Gosched() }

package tensor

import "syscall"

// yield gives the core to another runnable thread, if any (sched_yield): a pool goroutine that
// spins waiting for work lets a thread of this or another process run meanwhile.
func yield() { syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }

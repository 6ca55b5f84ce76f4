package tensor

import (
	"sync/atomic"
	"time"
)

// job is one op's work split into index ranges. Ops keep their job structs inside the backend and
// pass pointers to them, so dispatching work allocates nothing.
type job interface {
	run(worker, lo, hi int)
}

// pool is a fixed set of goroutines that run ranges of a job. The caller's goroutine takes the first
// range itself, so a pool of one thread runs everything inline.
//
// A decode step of a small model is hundreds of ops of tens of microseconds each, and waking a
// parked goroutine costs several microseconds (a futex and an interrupt to another core, more in
// a virtual machine). So a worker that has finished its range, and a caller waiting for the
// workers, first spin on an atomic for up to spinWait, and only then sleep: back-to-back ops hand
// over in well under a microsecond, while a pool left idle, or a machine whose cores other
// processes hold, costs at most spinWait of a core per op.
type pool struct {
	threads int
	workers []*worker
}

// spinWait is how long a waiting goroutine spins before it sleeps: a few ops' worth.
const spinWait = 50 * time.Microsecond

// worker is one pool goroutine and its mailbox. The caller posts a chunk and advances posted; the
// worker runs it and sets finished to the same count.
type worker struct {
	c        chunk
	posted   atomic.Uint64
	finished atomic.Uint64
	sleeping atomic.Bool   // the worker is about to sleep on wake, or sleeps
	waiting  atomic.Bool   // the caller is about to sleep on done, or sleeps
	wake     chan struct{} // caller → sleeping worker
	done     chan struct{} // worker → sleeping caller
	closed   atomic.Bool
	_        [64]byte // keep two workers' counters off one cache line
}

type chunk struct {
	j              job
	worker, lo, hi int
}

func newPool(threads int) *pool {
	p := &pool{threads: threads}
	for w := 1; w < threads; w++ {
		wk := &worker{wake: make(chan struct{}, 1), done: make(chan struct{}, 1)}
		p.workers = append(p.workers, wk)
		go wk.loop()
	}
	return p
}

// await spins until cond holds or spinWait has passed, then sleeps on ch with flag set, checking
// cond again after setting the flag so that a signal sent in between is not lost (a stale signal
// left in ch only causes one extra check).
func await(cond func() bool, flag *atomic.Bool, ch chan struct{}) {
	var start time.Time
	for i := 0; !cond(); i++ {
		if i&255 != 255 {
			continue
		}
		yield()
		if start.IsZero() {
			start = time.Now()
		} else if time.Since(start) > spinWait {
			flag.Store(true)
			if !cond() {
				<-ch
			}
			flag.Store(false)
			start = time.Time{}
		}
	}
}

// signal wakes the goroutine behind flag if it sleeps or is about to.
func signal(flag *atomic.Bool, ch chan struct{}) {
	if flag.Load() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (w *worker) loop() {
	var seen uint64
	for {
		await(func() bool { return w.posted.Load() != seen }, &w.sleeping, w.wake)
		seen = w.posted.Load()
		if w.closed.Load() {
			return
		}
		w.c.j.run(w.c.worker, w.c.lo, w.c.hi)
		w.finished.Store(seen)
		signal(&w.waiting, w.done)
	}
}

// parallel runs j over [0, n) split into at most p.threads contiguous ranges of at least grain
// indices each, and returns when all are done.
func (p *pool) parallel(n, grain int, j job) {
	if n <= 0 {
		return
	}
	parts := p.threads
	if grain < 1 {
		grain = 1
	}
	if most := (n + grain - 1) / grain; most < parts {
		parts = most
	}
	if parts <= 1 {
		j.run(0, 0, n)
		return
	}
	for w := 1; w < parts; w++ {
		wk := p.workers[w-1]
		wk.c = chunk{j: j, worker: w, lo: w * n / parts, hi: (w + 1) * n / parts}
		wk.posted.Add(1)
		signal(&wk.sleeping, wk.wake)
	}
	j.run(0, 0, n/parts)
	for w := 1; w < parts; w++ {
		wk := p.workers[w-1]
		want := wk.posted.Load()
		await(func() bool { return wk.finished.Load() == want }, &wk.waiting, wk.done)
	}
}

// close stops the goroutines.
func (p *pool) close() {
	for _, w := range p.workers {
		w.closed.Store(true)
		w.posted.Add(1)
		signal(&w.sleeping, w.wake)
	}
	p.workers = nil
}

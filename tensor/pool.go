package tensor

import "sync"

// job is one op's work split into index ranges. Ops keep their job structs inside the backend and
// pass pointers to them, so dispatching work allocates nothing.
type job interface {
	run(worker, lo, hi int)
}

type chunk struct {
	j              job
	worker, lo, hi int
}

// pool is a fixed set of goroutines that run ranges of a job. The caller's goroutine takes the first
// range itself, so a pool of one thread runs everything inline.
type pool struct {
	threads int
	work    []chan chunk
	done    sync.WaitGroup
}

func newPool(threads int) *pool {
	p := &pool{threads: threads}
	for w := 1; w < threads; w++ {
		c := make(chan chunk)
		p.work = append(p.work, c)
		go func() {
			for ch := range c {
				ch.j.run(ch.worker, ch.lo, ch.hi)
				p.done.Done()
			}
		}()
	}
	return p
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
	p.done.Add(parts - 1)
	for w := 1; w < parts; w++ {
		p.work[w-1] <- chunk{j: j, worker: w, lo: w * n / parts, hi: (w + 1) * n / parts}
	}
	j.run(0, 0, n/parts)
	p.done.Wait()
}

// close stops the goroutines.
func (p *pool) close() {
	for _, c := range p.work {
		close(c)
	}
	p.work = nil
}

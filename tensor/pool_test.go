package tensor

import (
	"sync/atomic"
	"testing"
	"time"
)

// countJob counts how often each index is run and which workers ran ranges.
type countJob struct {
	hits    []atomic.Int32
	workers [8]atomic.Int32
}

func (j *countJob) run(worker, lo, hi int) {
	j.workers[worker].Add(1)
	for i := lo; i < hi; i++ {
		j.hits[i].Add(1)
	}
}

// Every index runs exactly once, whether the workers are spinning from the last call (back to
// back) or asleep (after an idle spell longer than spinWait), with every split a grain allows.
func TestPoolParallel(t *testing.T) {
	for _, threads := range []int{1, 2, 3} {
		p := newPool(threads)
		for round := range 200 {
			if round%50 == 49 {
				time.Sleep(3 * spinWait) // let the workers fall asleep
			}
			n, grain := round%37, 1+round%5
			j := &countJob{hits: make([]atomic.Int32, n)}
			p.parallel(n, grain, j)
			for i := range j.hits {
				if h := j.hits[i].Load(); h != 1 {
					t.Fatalf("threads=%d n=%d grain=%d: index %d ran %d times", threads, n, grain, i, h)
				}
			}
			parts := 0
			for w := range j.workers {
				parts += int(j.workers[w].Load())
			}
			if want := min(threads, (n+grain-1)/grain); n > 0 && parts != want {
				t.Fatalf("threads=%d n=%d grain=%d: %d ranges, want %d", threads, n, grain, parts, want)
			}
		}
		p.close()
	}
}

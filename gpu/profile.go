//go:build cuda

package gpu

import (
	"fmt"
	"sort"

	"gorgonia.org/cu"
)

// KernelTime is one line of a decode-step profile: a part of the model (role) and the kernel that
// computes it, its launches per step, its device time per step, and the bytes it must read per
// step (weights, or the KV cache; 0 where nothing large is read).
type KernelTime struct {
	Name   string  // "o_proj · matvec_n1_bf16"
	Calls  int     // launches per step
	Micros float64 // µs per step, from the event before its launch to the event after
	Bytes  float64 // bytes per step it must read
}

// StepProfile is a decode step's kernels in launch order of first appearance, with their sum.
type StepProfile struct {
	Kernels []KernelTime
	Micros  float64 // Σ Kernels[i].Micros: one step with back-to-back launches, no graph, no PDL
	Steps   int
}

// stepTimer records an event before every launch while it is set on the backend (b.timing). Each
// kernel's time is the interval to the next event: its run plus the gap before the next launch.
type stepTimer struct {
	events    []cu.Event
	labels    []string
	bytes     []float64
	n         int
	role      string  // what the next launches compute (Decoder.role)
	roleBytes float64 // the bytes of role, counted for its first launch only
	err       error
}

func (t *stepTimer) mark(b *Backend, kernel string) {
	if t.err != nil {
		return
	}
	if t.n == len(t.events) {
		ev, err := cu.MakeEvent(cu.DefaultEvent)
		if err != nil {
			t.err = fmt.Errorf("gpu: cuEventCreate: %v", err)
			return
		}
		t.events, t.labels, t.bytes = append(t.events, ev), append(t.labels, ""), append(t.bytes, 0)
	}
	if err := t.events[t.n].Record(b.stream); err != nil {
		t.err = fmt.Errorf("gpu: cuEventRecord: %v", err)
		return
	}
	label := kernel
	if t.role != "" {
		label = t.role + " · " + kernel
	}
	t.labels[t.n], t.bytes[t.n] = label, t.roleBytes
	t.roleBytes = 0
	t.n++
}

func (t *stepTimer) close() {
	for i := range t.events {
		cu.DestroyEvent(&t.events[i])
	}
}

// Profile times each kernel of steps decode steps (the decoder advances by steps tokens; the
// caller keeps the position under capacity). Each step is queued without a graph and without
// programmatic dependent launch, with an event before every launch, behind a kernel that holds
// the stream for 20 ms, so that the kernels run back to back however slowly the host queues
// them. The step time this sums to is that of plain launches; the graph and PDL take launch gaps
// and overlap off it, which the per-kernel view cannot show.
func (d *Decoder) Profile(steps int) (*StepProfile, error) {
	b := d.s.b
	t := &stepTimer{}
	defer func() { defer b.enter()(); t.close() }()
	if err := b.Sync(); err != nil {
		return nil, err
	}
	// Load every module first: a module load inside the timed region would stall the stream.
	b.dry = true
	func() { defer b.enter()(); d.queue() }()
	b.dry = false
	order := []string{}
	sum := map[string]*KernelTime{}
	for s := 0; s < steps; s++ {
		err := func() error {
			defer b.enter()()
			t.n = 0
			pdl := d.PDL
			d.PDL = false
			defer func() { d.PDL = pdl }()
			b.holdNs(20e6)
			b.timing = t
			d.queue()
			b.timing = nil
			t.mark(b, "end")
			if t.err != nil {
				return t.err
			}
			if err := b.stream.Synchronize(); err != nil {
				return fmt.Errorf("gpu: profiled decode step failed on the device: %v", err)
			}
			for i := 0; i+1 < t.n; i++ {
				ms, err := t.events[i].Elapsed(t.events[i+1])
				if err != nil {
					return fmt.Errorf("gpu: cuEventElapsedTime: %v", err)
				}
				k := sum[t.labels[i]]
				if k == nil {
					k = &KernelTime{Name: t.labels[i]}
					sum[t.labels[i]] = k
					order = append(order, t.labels[i])
				}
				k.Calls++
				k.Micros += 1e3 * float64(ms)
				k.Bytes += t.bytes[i]
			}
			return nil
		}()
		b.timing = nil
		if err != nil {
			return nil, err
		}
		d.hostPos++
	}
	p := &StepProfile{Steps: steps}
	for _, name := range order {
		k := sum[name]
		k.Calls /= steps
		k.Micros /= float64(steps)
		k.Bytes /= float64(steps)
		p.Kernels = append(p.Kernels, *k)
		p.Micros += k.Micros
	}
	return p, nil
}

// ByTime returns the profile's kernels, longest first.
func (p *StepProfile) ByTime() []KernelTime {
	ks := append([]KernelTime(nil), p.Kernels...)
	sort.SliceStable(ks, func(i, j int) bool { return ks[i].Micros > ks[j].Micros })
	return ks
}

package attrib

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/tillerlm/tiller/llama"
	"github.com/tillerlm/tiller/tensor"
	"github.com/tillerlm/tiller/tensor/tensortest"
)

var _ device = (*tensortest.Device)(nil)

// AtP, AtP* and exact patching on a device — activations captured there, gradients kept there as
// whole batches, scores, the QK fix and the patched runs' metrics reduced there — give what the CPU
// path gives, node for node: tensortest.Device runs the same ops as the CPU on memory the host
// cannot see, so this checks the device path's plumbing (which rows, which heads, which positions)
// with every test run; the GPU's kernels are checked against the same path on a card. Pairs of
// equal length, with a continuation (log-probability), and right-aligned ones of different
// lengths; two pairs per batch. The only arithmetic that differs is RoPE of the QK fix's q and k
// (F32 on the device, F64 on the CPU path) and the order of f64 sums: within 1e-5 of each grid's
// largest value. Every byte the runs take on the device is given back.
func TestRunOnDevice(t *testing.T) {
	m := tinyModel(t, 7, nil)
	ids := nearTokens(m, swapPairs, 0.25) // before the device runner uploads the embeddings
	cpu := tensor.NewCPU(2)
	t.Cleanup(cpu.Close)
	dev := tensortest.NewDevice(2)
	t.Cleanup(dev.Close)
	rc, rd := llama.NewRunner(m, cpu), llama.NewRunner(m, dev)
	ins := threePairs(ids)
	clean := []int32{1, 60, 61, 20, 31, 44, 52, 60, 71, 80, 9, 14}
	corrupt := []int32{1, 20, 31, ids[0], 52, 60, ids[1], 80, 9, 14}
	aligned := &Input{Line: 4, Clean: clean, Corrupt: corrupt, A: 5, B: 7, Shift: 2, Metric: MetricSpec{LogitDiff: []string{"a", "b"}}}
	for range clean {
		aligned.Labels = append(aligned.Labels, "t")
	}
	ins = append(ins, aligned)
	opt := Options{Star: true, Verify: VerifyAll, Batch: 2}
	want, err := Run(rc, ins, opt)
	if err != nil {
		t.Fatal(err)
	}
	// The runner's state and the weights stay; everything a run makes on the device goes back.
	if _, err := Run(rd, ins[:1], Options{Batch: 1}); err != nil {
		t.Fatal(err)
	}
	live := dev.Live
	got, err := Run(rd, ins, opt)
	if err != nil {
		t.Fatal(err)
	}
	if dev.Live != live {
		t.Errorf("%d device allocations outlive the run (%d before it)", dev.Live, live)
	}
	for i := range ins {
		for m := Method(0); m < numMethods; m++ {
			for k, w := range want.Pairs[i].Scores[m] {
				g := got.Pairs[i].Scores[m][k]
				if (w == nil) != (g == nil) {
					t.Fatalf("pair %d %s %s: grid on the CPU %v, on the device %v", i, m, Kind(k), w != nil, g != nil)
				}
				if w == nil {
					continue
				}
				sameGrid(t, fmt.Sprintf("pair %d %s %s", i, m, Kind(k)), g, w)
			}
		}
		if d := math.Abs(got.Pairs[i].Clean-want.Pairs[i].Clean) + math.Abs(got.Pairs[i].Corrupt-want.Pairs[i].Corrupt); d > 1e-5 {
			t.Errorf("pair %d: metrics %g, %g on the device, %g, %g on the CPU", i, got.Pairs[i].Clean, got.Pairs[i].Corrupt, want.Pairs[i].Clean, want.Pairs[i].Corrupt)
		}
	}
	if got.Verified.Nodes != want.Verified.Nodes || got.Verified.Nodes == 0 {
		t.Errorf("exact patching of %d nodes on the device, %d on the CPU", got.Verified.Nodes, want.Verified.Nodes)
	}
}

func sameGrid(t *testing.T, what string, got, want *Grid) {
	t.Helper()
	scale := 0.0
	for _, v := range want.Data {
		if !math.IsNaN(v) {
			scale = math.Max(scale, math.Abs(v))
		}
	}
	for j, w := range want.Data {
		g := got.Data[j]
		if math.IsNaN(w) != math.IsNaN(g) || math.Abs(g-w) > 1e-5*scale {
			t.Fatalf("%s: node %v is %g on the device, %g on the CPU (grid scale %g)", what, want.Node(j), g, w, scale)
		}
	}
}

// On a device, batches are sized by its free memory: a default batch shrinks to what fits, a batch
// that was asked for and does not fit is an error that gives the estimate, and the QK fix refuses
// prompts past the device's limit.
func TestDeviceMemoryFit(t *testing.T) {
	m := tinyModel(t, 7, nil)
	ins := threePairs(nearTokens(m, swapPairs, 0.25))
	dev := tensortest.NewDevice(2)
	t.Cleanup(dev.Close)
	r := llama.NewRunner(m, dev)
	var progress strings.Builder
	a := &analysis{r: r, opt: Options{Batch: 2, Progress: &progress}, cfg: m.Config, dims: m.Config.HookDims(), kinds: DefaultKinds, dev: dev}
	for l := 0; l < m.Config.Layers; l++ {
		for _, k := range a.kinds {
			a.reads = append(a.reads, k.Point(l))
		}
	}
	one, two := a.batchBytes(ins[:1]), a.batchBytes(ins[:2])
	if one <= 0 || two <= one {
		t.Fatalf("estimates: one pair %d bytes, two %d", one, two)
	}
	dev.Memory = 1 << 40
	used := dev.Memory - dev.FreeMemory() // the weights: what is allocated
	dev.Memory = used + one + (two-one)/2 // a pair fits, two do not
	if err := a.fit(ins, true); err != nil || a.opt.Batch != 1 {
		t.Errorf("default batch: error %v, batches of %d; want 1", err, a.opt.Batch)
	}
	a.opt.Batch = 2
	err := a.fit(ins, false)
	if err == nil || !strings.Contains(err.Error(), "a batch of 2 pair(s) needs about") || !strings.Contains(err.Error(), "--batch") {
		t.Errorf("a batch of 2 asked for: %v", err)
	}
	a.opt.Star, a.kinds = true, append(a.kinds, Query, Key)
	long := &Input{Line: 9, Clean: make([]int32, 30), Corrupt: make([]int32, 30)}
	dev.Memory = 0
	if err := a.checkDevice([]*Input{long}, true); err != nil {
		t.Fatal(err)
	}
	if err := (&analysis{opt: a.opt, kinds: a.kinds, dev: limited{dev, 20}}).checkDevice([]*Input{long}, true); err == nil || !strings.Contains(err.Error(), "line 9: 30 tokens") {
		t.Errorf("a 30-token prompt with a QK fix limit of 20: %v", err)
	}
}

// limited is a device whose QK fix takes up to n positions.
type limited struct {
	*tensortest.Device
	n int
}

func (l limited) MaxQKContext() int { return l.n }

// The memory estimate that sizes batches on a device holds what a batch really takes there: the
// recorded pass with the corrupt prompts beside the clean ones, its backward, the captures and
// gradients, plain and with AtP*.
func TestDeviceMemoryEstimateHolds(t *testing.T) {
	m := tinyModel(t, 7, map[string]any{"intermediate_size": 168}) // the 8B shape's 3.5× FFN
	ins := threePairs(nearTokens(m, swapPairs, 0.25))
	for _, star := range []bool{false, true} {
		dev := tensortest.NewDevice(2)
		t.Cleanup(dev.Close)
		r := llama.NewRunner(m, dev)
		opt := Options{Batch: 2, Star: star}
		if _, err := Run(r, ins[:1], Options{Batch: 1}); err != nil { // the weights and the runner's state
			t.Fatal(err)
		}
		a := &analysis{opt: opt, cfg: m.Config, dims: m.Config.HookDims(), kinds: append([]Kind(nil), DefaultKinds...)}
		if star {
			a.kinds = append(a.kinds, Query, Key)
		}
		for l := 0; l < m.Config.Layers; l++ {
			for _, k := range a.kinds {
				a.reads = append(a.reads, k.Point(l))
			}
		}
		estimate := max(a.batchBytes(ins[:2]), a.batchBytes(ins[2:]))
		base := dev.Used()
		dev.Peak = base
		if _, err := Run(r, ins, opt); err != nil {
			t.Fatal(err)
		}
		if took := dev.Peak - base; took > estimate {
			t.Errorf("AtP* %v: a batch took %d bytes on the device, the estimate that sized it %d", star, took, estimate)
		} else if took < estimate/8 {
			t.Errorf("AtP* %v: a batch took %d bytes on the device, the estimate %d is far from it", star, took, estimate)
		}
	}
}

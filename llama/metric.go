package llama

import (
	"fmt"
	"math"

	"github.com/tillerlm/tiller/tensor"
)

// Metric is a scalar function of the logits a forward pass returned, (rows, vocab): Eval returns
// its value and writes its gradient with respect to every logit into grad (same shape, zeroed by
// the caller).
type Metric interface {
	Eval(logits, grad *tensor.Tensor) (float64, error)
}

// LogitDiff is logits[Row, A] − logits[Row, B]: how much more the model prefers answer A to B at
// one row (the last, for Row −1).
type LogitDiff struct {
	Row  int
	A, B int32
}

func (d LogitDiff) Eval(logits, grad *tensor.Tensor) (float64, error) {
	rows, vocab := logits.Rows(), logits.Cols()
	row := d.Row
	if row < 0 {
		row += rows
	}
	if row < 0 || row >= rows {
		return 0, fmt.Errorf("logit difference at row %d of %d", d.Row, rows)
	}
	for _, t := range []int32{d.A, d.B} {
		if t < 0 || int(t) >= vocab {
			return 0, fmt.Errorf("logit difference of token %d, outside the vocabulary of %d", t, vocab)
		}
	}
	x := logits.ToF64()
	set(grad, row*vocab+int(d.A), 1)
	set(grad, row*vocab+int(d.B), -1)
	if d.A == d.B {
		set(grad, row*vocab+int(d.A), 0)
	}
	return x[row*vocab+int(d.A)] - x[row*vocab+int(d.B)], nil
}

// LogProb is Σ_k log softmax(logits[Rows[k]])[Tokens[k]]: the log-probability of a continuation,
// where row Rows[k] is the position that predicts Tokens[k].
type LogProb struct {
	Rows   []int
	Tokens []int32
}

func (l LogProb) Eval(logits, grad *tensor.Tensor) (float64, error) {
	rows, vocab := logits.Rows(), logits.Cols()
	if len(l.Rows) != len(l.Tokens) || len(l.Rows) == 0 {
		return 0, fmt.Errorf("log-probability of %d tokens at %d rows", len(l.Tokens), len(l.Rows))
	}
	x := logits.ToF64()
	e := make([]float64, vocab) // exp(x − max) of one row, taken once for the value and the gradient
	var total float64
	for k, r := range l.Rows {
		t := l.Tokens[k]
		if r < 0 || r >= rows || t < 0 || int(t) >= vocab {
			return 0, fmt.Errorf("log-probability of token %d at row %d: out of range (%d rows, vocabulary %d)", t, r, rows, vocab)
		}
		row := x[r*vocab : (r+1)*vocab]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		var z float64
		for j, v := range row {
			e[j] = math.Exp(v - m)
			z += e[j]
		}
		total += row[t] - m - math.Log(z)
		// d/dx_j log softmax(x)_t = [j = t] − softmax(x)_j
		for j := range row {
			add(grad, r*vocab+j, -e[j]/z)
		}
		add(grad, r*vocab+int(t), 1)
	}
	return total, nil
}

// MetricFunc is a metric written in Go: F returns the value and the gradient for the logits given
// as float64, row-major (rows, vocab).
type MetricFunc func(logits []float64, rows, vocab int) (float64, []float64)

func (f MetricFunc) Eval(logits, grad *tensor.Tensor) (float64, error) {
	v, g := f(logits.ToF64(), logits.Rows(), logits.Cols())
	if len(g) != logits.Numel() {
		return 0, fmt.Errorf("metric gradient has %d values for %v logits", len(g), logits.Shape)
	}
	for i, x := range g {
		set(grad, i, x)
	}
	return v, nil
}

func set(t *tensor.Tensor, i int, v float64) {
	if t.DType == tensor.F64 {
		t.F64()[i] = v
	} else {
		t.F32()[i] = float32(v)
	}
}

func add(t *tensor.Tensor, i int, v float64) {
	if t.DType == tensor.F64 {
		t.F64()[i] += v
	} else {
		t.F32()[i] += float32(v)
	}
}

// Gradients runs the whole analysis of one batch: a recorded forward, the metric, and the
// backward pass. It returns the metric's value and the gradients asked for.
func (r *Runner) Gradients(b Batch, metric Metric, opt GradOptions) (float64, *Grads, error) {
	rec, logits, err := r.Record(b, nil)
	if err != nil {
		return 0, nil, err
	}
	defer rec.Release()
	dlogits := tensor.New(logits.DType, logits.Shape...)
	v, err := metric.Eval(logits, dlogits)
	if err != nil {
		return 0, nil, err
	}
	g, err := r.Backward(rec, dlogits, opt)
	return v, g, err
}

package steer

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
)

// Interval is a statistic of a sample with its 95% bootstrap interval.
type Interval struct {
	Value float64 `json:"value"`
	Lo    float64 `json:"lo"`
	Hi    float64 `json:"hi"`
	N     int     `json:"n"` // the sample's size, NaNs left out
}

// MarshalJSON writes NaN (an empty sample) as null, which JSON has and NaN it has not.
func (iv Interval) MarshalJSON() ([]byte, error) {
	p := func(x float64) *float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return &x
	}
	return json.Marshal(map[string]any{"value": p(iv.Value), "lo": p(iv.Lo), "hi": p(iv.Hi), "n": iv.N})
}

// Mean is the arithmetic mean.
func Mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// GeoMean is exp of the mean log: the aggregate of perplexities, which multiply rather than add
// (one runaway text of perplexity 10⁴ does not drown the rest).
func GeoMean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += math.Log(x)
	}
	return math.Exp(s / float64(len(xs)))
}

// Bootstrap is stat of the sample xs with a 95% percentile-bootstrap interval: the 2.5th and
// 97.5th percentiles of stat over resamples of xs drawn with replacement, from a fixed seed so
// the same data give the same interval. NaNs are left out first; an empty sample gives NaN.
func Bootstrap(xs []float64, stat func([]float64) float64, resamples int, seed uint64) Interval {
	var clean []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			clean = append(clean, x)
		}
	}
	n := len(clean)
	if n == 0 {
		return Interval{Value: math.NaN(), Lo: math.NaN(), Hi: math.NaN()}
	}
	iv := Interval{Value: stat(clean), N: n}
	rng := rand.New(rand.NewPCG(seed, 0x626f6f74)) // "boot"
	stats := make([]float64, resamples)
	buf := make([]float64, n)
	for b := range stats {
		for i := range buf {
			buf[i] = clean[rng.IntN(n)]
		}
		stats[b] = stat(buf)
	}
	slices.Sort(stats)
	iv.Lo, iv.Hi = quantile(stats, 0.025), quantile(stats, 0.975)
	if resamples == 0 {
		iv.Lo, iv.Hi = iv.Value, iv.Value
	}
	return iv
}

// quantile of sorted xs by linear interpolation between order statistics.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	pos := q * float64(len(xs)-1)
	i := int(pos)
	if i+1 >= len(xs) {
		return xs[len(xs)-1]
	}
	f := pos - float64(i)
	return xs[i]*(1-f) + xs[i+1]*f
}

package main

import (
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// lossPoint is one step of a loss curve; held is NaN where the held-out set was not evaluated.
type lossPoint struct {
	step        int
	train, held float64
}

// plotLoss draws the training loss per step and the held-out loss where measured; the format
// follows the file's extension (.png, .svg).
func plotLoss(path string, points []lossPoint) error {
	p := plot.New()
	p.Title.Text = "tiller train: next-token loss"
	p.X.Label.Text = "step"
	p.Y.Label.Text = "cross-entropy (nats per token)"
	var train, held plotter.XYs
	for _, pt := range points {
		train = append(train, plotter.XY{X: float64(pt.step), Y: pt.train})
		if !math.IsNaN(pt.held) {
			held = append(held, plotter.XY{X: float64(pt.step), Y: pt.held})
		}
	}
	tl, err := plotter.NewLine(train)
	if err != nil {
		return err
	}
	tl.Color = color.RGBA{R: 60, G: 110, B: 200, A: 255}
	p.Add(tl)
	p.Legend.Add("training batch", tl)
	if len(held) > 0 {
		hl, hp, err := plotter.NewLinePoints(held)
		if err != nil {
			return err
		}
		hl.Color = color.RGBA{R: 220, G: 90, B: 40, A: 255}
		hp.Color = hl.Color
		p.Add(hl, hp)
		p.Legend.Add("held-out", hl, hp)
	}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p.Save(7*vg.Inch, 4*vg.Inch, path)
}

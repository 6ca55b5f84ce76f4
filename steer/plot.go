package steer

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// withErrors is a line's points with their interval, as gonum's error bars read them.
type withErrors struct {
	plotter.XYs
	plotter.YErrors
}

// PlotDoseResponse draws each metric (but the word count) against strength, one panel per metric,
// the value with its 95% bootstrap interval as error bars; the format follows the extension of
// path (.png or .svg).
func (res *Result) PlotDoseResponse(path, title string) error {
	var panels []*plot.Plot
	for _, m := range res.Metrics {
		if m.Key == "words" {
			continue
		}
		p := plot.New()
		p.Title.Text = m.Label
		p.X.Label.Text = "strength"
		if m.Key == "perplexity" {
			// Perplexity grows geometrically once steering breaks fluency.
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = plot.TickerFunc(logTicks)
			p.Title.Text += " (log scale)"
		}
		var pts withErrors
		for _, row := range res.Rows {
			iv := row.Metrics[m.Key]
			if math.IsNaN(iv.Value) {
				continue
			}
			pts.XYs = append(pts.XYs, plotter.XY{X: row.Strength, Y: iv.Value})
			pts.YErrors = append(pts.YErrors, struct{ Low, High float64 }{iv.Value - iv.Lo, iv.Hi - iv.Value})
		}
		if len(pts.XYs) > 0 {
			line, points, err := plotter.NewLinePoints(pts.XYs)
			if err != nil {
				return err
			}
			blue := color.RGBA{R: 50, G: 100, B: 190, A: 255}
			line.Color, points.Color = blue, blue
			bars, err := plotter.NewYErrorBars(pts)
			if err != nil {
				return err
			}
			bars.Color = blue
			p.Add(plotter.NewGrid(), line, points, bars)
		}
		panels = append(panels, p)
	}
	cols := min(3, len(panels))
	rows := (len(panels) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
		for j := range grid[i] {
			if k := i*cols + j; k < len(panels) {
				grid[i][j] = panels[k]
			} else {
				grid[i][j] = plot.New() // an empty tile keeps the grid square
				grid[i][j].HideAxes()
			}
		}
	}
	w, h := vg.Length(cols)*3.2*vg.Inch, vg.Length(rows)*2.6*vg.Inch+0.4*vg.Inch
	var canvas vg.CanvasWriterTo
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".png":
		canvas = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	case ".svg":
		canvas = vgsvg.New(w, h)
	default:
		return fmt.Errorf("%s: plot format %q, want .png or .svg", path, ext)
	}
	dc := draw.New(canvas)
	// The title across the top, the panels below it.
	font := plot.DefaultFont
	font.Size = 13
	sty := draw.TextStyle{Color: color.Black, Font: font, XAlign: draw.XCenter, YAlign: draw.YTop, Handler: plot.DefaultTextHandler}
	dc.FillText(sty, vg.Point{X: w / 2, Y: h - 0.08*vg.Inch}, title)
	body := draw.Crop(dc, 0, 0, 0, -0.4*vg.Inch)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: 0.25 * vg.Inch, PadY: 0.25 * vg.Inch, PadTop: 0.05 * vg.Inch, PadBottom: 0.1 * vg.Inch, PadLeft: 0.1 * vg.Inch, PadRight: 0.15 * vg.Inch}
	for i, row := range plot.Align(grid, tiles, body) {
		for j, c := range row {
			grid[i][j].Draw(c)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %v", path, err)
	}
	return f.Close()
}

// logTicks labels a log axis at 1, 1.5, 2, 3, 5 and 7 times the powers of ten in range, so that a
// range inside one decade (perplexity 1.6 to 3.5) still gets labels; gonum's LogTicks labels
// only powers of ten.
func logTicks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	if !(lo > 0) || !(hi >= lo) {
		return ticks
	}
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 1.5, 2, 3, 5, 7} {
			v := m * math.Pow(10, e)
			if v >= lo && v <= hi {
				ticks = append(ticks, plot.Tick{Value: v, Label: fmt.Sprintf("%g", v)})
			}
		}
	}
	return ticks
}

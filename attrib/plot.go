package attrib

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/moreland"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// heatGrid shows one layer-by-column slice of a Grid to plotter.HeatMap: (layer, pos) for the
// residual stream and block outputs, (layer, head) for heads.
type heatGrid struct {
	g     *Grid
	heads bool // columns are heads
}

func (h heatGrid) Dims() (c, r int) {
	if h.heads {
		return h.g.Heads, h.g.Layers
	}
	return h.g.Positions, h.g.Layers
}

func (h heatGrid) Z(c, r int) float64 {
	if h.heads {
		return h.g.At(Node{Kind: h.g.Kind, Layer: r, Head: c, Pos: -1})
	}
	return h.g.At(Node{Kind: h.g.Kind, Layer: r, Head: -1, Pos: c})
}

func (h heatGrid) X(c int) float64 { return float64(c) }
func (h heatGrid) Y(r int) float64 { return float64(r) }

// Heatmap draws the averaged scores of one method and kind — layer × position for resid_pre,
// attn_out and mlp_out, layer × head for head — as PNG or SVG (by the path's extension), with the
// clean tokens on the position axis and a colour bar symmetric about zero (blue negative, red
// positive).
func (res *Result) Heatmap(m Method, k Kind, path string) error {
	g := res.Mean[m][k]
	if g == nil {
		return fmt.Errorf("attrib: no %s scores of %s nodes to plot", m, k)
	}
	if k != ResidPre && k != AttnOut && k != MLPOut && k != Head {
		return fmt.Errorf("attrib: %s nodes have no layer-by-column heatmap", k)
	}
	hg := heatGrid{g: g, heads: k == Head}
	cols, rows := hg.Dims()
	mx := 0.0
	for _, v := range g.Data {
		if !math.IsNaN(v) {
			mx = math.Max(mx, math.Abs(v))
		}
	}
	if mx == 0 {
		mx = 1
	}
	cm := moreland.SmoothBlueRed()
	cm.SetMin(-mx)
	cm.SetMax(mx)

	p := plot.New()
	what := map[Kind]string{ResidPre: "blocks.L.hook_resid_pre", AttnOut: "blocks.L.hook_attn_out", MLPOut: "blocks.L.hook_mlp_out", Head: "blocks.L.attn.hook_z per head, all positions"}[k]
	p.Title.Text = fmt.Sprintf("%s: %s\nmean over %d pairs; metric clean %.3g, corrupt %.3g", methodTitle(m), what, len(res.Pairs), res.Clean, res.Corrupt)
	p.Y.Label.Text = "layer"
	hm := plotter.NewHeatMap(hg, cm.Palette(255))
	hm.Min, hm.Max = -mx, mx
	p.Add(hm)

	var xt, yt []plot.Tick
	stride := max(1, (rows+39)/40)
	for r := 0; r < rows; r += stride {
		yt = append(yt, plot.Tick{Value: float64(r), Label: fmt.Sprint(r)})
	}
	if k == Head {
		p.X.Label.Text = "head"
		for c := 0; c < cols; c++ {
			yt := plot.Tick{Value: float64(c)}
			if cols <= 48 || c%4 == 0 {
				yt.Label = fmt.Sprint(c)
			}
			xt = append(xt, yt)
		}
	} else {
		p.X.Label.Text = "clean prompt token (pairs aligned at the end; −k: k tokens before the last, where the pairs' tokens differ)"
		stride := max(1, (cols+159)/160)
		for c := 0; c < cols; c += stride {
			xt = append(xt, plot.Tick{Value: float64(c), Label: res.Labels[c]})
		}
		p.X.Tick.Label.Rotation = math.Pi / 2
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
	}
	p.X.Tick.Marker = plot.ConstantTicks(xt)
	p.Y.Tick.Marker = plot.ConstantTicks(yt)
	p.X.Tick.Label.Font.Size = vg.Points(8)
	p.Y.Tick.Label.Font.Size = vg.Points(8)
	p.X.Label.TextStyle.Font.Size = vg.Points(9)
	p.X.Min, p.X.Max = -0.5, float64(cols)-0.5
	p.Y.Min, p.Y.Max = -0.5, float64(rows)-0.5

	bar := plot.New()
	bar.Y.Label.Text = "score (metric units)"
	bar.X.Tick.Marker = plot.ConstantTicks(nil)
	bar.Add(&plotter.ColorBar{ColorMap: cm, Vertical: true})
	bar.HideX()
	bar.Y.Tick.Label.Font.Size = vg.Points(8)

	w := vg.Length(max(7, 2.5+0.16*float64(cols))) * vg.Inch
	if k == Head {
		w = vg.Length(max(6, 2.5+0.25*float64(cols))) * vg.Inch
	}
	h := vg.Length(max(3.5, 2.2+0.2*float64(rows))) * vg.Inch
	if k != Head {
		h += 1.0 * vg.Inch // room for the rotated token labels
	}
	render := func(c vg.CanvasSizer) {
		dc := draw.New(c)
		barW := 1.1 * vg.Inch
		p.Draw(draw.Crop(dc, 0, -barW, 0, 0))
		bar.Draw(draw.Crop(dc, w-barW+0.15*vg.Inch, 0, h/4, -h/8))
	}
	var out io.WriterTo
	switch filepath.Ext(path) {
	case ".png":
		c := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110), vgimg.UseBackgroundColor(color.White))
		render(c)
		out = vgimg.PngCanvas{Canvas: c}
	case ".svg":
		c := vgsvg.New(w, h)
		render(c)
		out = c
	default:
		return fmt.Errorf("attrib: heatmap %s: want a .png or .svg file", path)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := out.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func methodTitle(m Method) string {
	return map[Method]string{AtP: "AtP", AtPStar: "AtP*", GradDrop: "AtP* GradDrop |score|", Exact: "exact patching"}[m]
}

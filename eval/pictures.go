package eval

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"sort"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"github.com/dimtorch/dimtorch/torch"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var palette = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255}, {148, 103, 189, 255},
	{140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}, {188, 189, 34, 255}, {23, 190, 207, 255},
}

// PCA2 returns the projections of the rows of x [N, D] onto its first two
// principal components (power iteration with deflation on the covariance).
func PCA2(x *torch.Tensor) ([][2]float64, error) {
	v, err := x.To(torch.Float64).Float64s()
	if err != nil {
		return nil, err
	}
	n, d := int(x.Size(0)), int(x.Size(1))
	mean := make([]float64, d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			mean[j] += v[i*d+j] / float64(n)
		}
	}
	cov := make([]float64, d*d)
	row := make([]float64, d)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			row[j] = v[i*d+j] - mean[j]
		}
		for a := 0; a < d; a++ {
			for b := a; b < d; b++ {
				cov[a*d+b] += row[a] * row[b]
			}
		}
	}
	for a := 0; a < d; a++ {
		for b := 0; b < a; b++ {
			cov[a*d+b] = cov[b*d+a]
		}
	}
	var comps [2][]float64
	for c := 0; c < 2; c++ {
		u := make([]float64, d)
		for j := range u {
			u[j] = 1 / math.Sqrt(float64(d)) * (1 + 0.01*float64(j%7))
		}
		for it := 0; it < 200; it++ {
			w := make([]float64, d)
			for a := 0; a < d; a++ {
				for b := 0; b < d; b++ {
					w[a] += cov[a*d+b] * u[b]
				}
			}
			norm := 0.0
			for _, z := range w {
				norm += z * z
			}
			norm = math.Sqrt(norm)
			if norm == 0 {
				break
			}
			for j := range u {
				u[j] = w[j] / norm
			}
		}
		comps[c] = u
		// Deflate: cov -= lambda u u^T.
		lambda := 0.0
		for a := 0; a < d; a++ {
			for b := 0; b < d; b++ {
				lambda += u[a] * cov[a*d+b] * u[b]
			}
		}
		for a := 0; a < d; a++ {
			for b := 0; b < d; b++ {
				cov[a*d+b] -= lambda * u[a] * u[b]
			}
		}
	}
	out := make([][2]float64, n)
	for i := 0; i < n; i++ {
		for c := 0; c < 2; c++ {
			var p float64
			for j := 0; j < d; j++ {
				p += (v[i*d+j] - mean[j]) * comps[c][j]
			}
			out[i][c] = p
		}
	}
	return out, nil
}

// MapPNG draws the first two principal components of y coloured by class.
func MapPNG(path string, y, labels *torch.Tensor, classes []string, title string) error {
	pts, err := PCA2(y)
	if err != nil {
		return err
	}
	lab, err := labels.Int64s()
	if err != nil {
		return err
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "principal component 1"
	p.Y.Label.Text = "principal component 2"
	byClass := map[int64]plotter.XYs{}
	for i, q := range pts {
		byClass[lab[i]] = append(byClass[lab[i]], plotter.XY{X: q[0], Y: q[1]})
	}
	keys := make([]int64, 0, len(byClass))
	for k := range byClass {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		sc, err := plotter.NewScatter(byClass[k])
		if err != nil {
			return err
		}
		sc.GlyphStyle.Color = palette[int(k)%len(palette)]
		sc.GlyphStyle.Radius = vg.Points(1.2)
		sc.GlyphStyle.Shape = draw.CircleGlyph{}
		p.Add(sc)
		name := fmt.Sprint(k)
		if int(k) < len(classes) {
			name = classes[k]
		}
		p.Legend.Add(name, sc)
	}
	p.Legend.Top = true
	w, err := p.WriterTo(8*vg.Inch, 6*vg.Inch, "png")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, func(f io.Writer) error { _, err := w.WriteTo(f); return err })
}

// NeighboursPNG draws one row per query: the query image, then its nearest
// training images under cosine similarity of y. queries are test indices.
func NeighboursPNG(path string, testY, testImages, trainY, trainImages *torch.Tensor, queries []int, k int) error {
	s := torch.NewScope()
	defer s.Close()
	norm := func(x *torch.Tensor) *torch.Tensor {
		return x.Div(x.Square().SumDims([]int64{1}, true).Sqrt().ClampMin(1e-12))
	}
	q := make([]int64, len(queries))
	for i, v := range queries {
		q[i] = int64(v)
	}
	qi := torch.FromSlice(q, []int64{int64(len(q))}, s)
	sim := norm(testY.Ref(s).IndexSelect(0, qi)).Matmul(norm(trainY.Ref(s)).T())
	_, idx := sim.TopK(int64(k), 1)
	nbr, err := idx.Int64s()
	if err != nil {
		return err
	}
	c, h, w := int(testImages.Size(1)), int(testImages.Size(2)), int(testImages.Size(3))
	const pad = 2
	grid := image.NewRGBA(image.Rect(0, 0, (k+1)*(w+pad)+pad*3, len(queries)*(h+pad)+pad))
	for i := range grid.Pix {
		grid.Pix[i] = 255
	}
	put := func(img *torch.Tensor, row, col int) error {
		v, err := img.Float32s()
		if err != nil {
			return err
		}
		x0 := pad + col*(w+pad)
		if col > 0 {
			x0 += pad * 2 // a gap after the query
		}
		y0 := pad + row*(h+pad)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				px := func(ch int) uint8 {
					return uint8(math.Max(0, math.Min(255, math.Round((float64(v[(ch*h+y)*w+x])+1)*127.5))))
				}
				r := px(0)
				g, b := r, r
				if c == 3 {
					g, b = px(1), px(2)
				}
				grid.Set(x0+x, y0+y, color.RGBA{r, g, b, 255})
			}
		}
		return nil
	}
	for r, qv := range queries {
		if err := put(testImages.Select(0, int64(qv)).MoveTo(s), r, 0); err != nil {
			return err
		}
		for j := 0; j < k; j++ {
			if err := put(trainImages.Select(0, nbr[r*k+j]).MoveTo(s), r, j+1); err != nil {
				return err
			}
		}
	}
	return atomicfile.Write(path, 0o644, func(f io.Writer) error { return png.Encode(f, grid) })
}

package export

import (
	"github.com/dimtorch/dimtorch/internal/testref"
	"math"
	"path/filepath"
	"testing"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

func needORT(t *testing.T) { t.Helper(); testref.NeedORT(t) }

// onnxruntime on the exported model agrees with libtorch's forward within
// 1e-4 for every encoder and every output.
func TestONNXRuntimeMatchesLibtorch(t *testing.T) {
	needORT(t)
	dir := t.TempDir()
	for _, name := range models.Names() {
		t.Run(name, func(t *testing.T) {
			_ = torch.ManualSeed(21)
			enc, err := models.New(models.Config{Name: name, InChannels: 3})
			if err != nil {
				t.Fatal(err)
			}
			defer nn.Free(enc)
			s := torch.NewScope()
			defer s.Close()
			in := enc.Spec().Input
			shape := []int64{3, int64(in[0]), int64(in[1]), int64(in[2])}
			for i := 0; i < 2; i++ { // non-trivial BatchNorm statistics
				enc.Encode(torch.Randn(shape, s))
			}
			enc.Train(false)
			m, err := Model(enc, Options{Outputs: []string{"y", "fc", "conv", "local"}})
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, name+".onnx")
			if err := Write(p, m); err != nil {
				t.Fatal(err)
			}
			x := torch.Rand(shape, s) // images in [0, 1]
			xs, _ := x.Float32s()
			var want map[string][]float64
			torch.NoGrad(func() {
				taps := enc.Encode(x.MulScalar(2).SubScalar(1))
				want = map[string][]float64{}
				for tap, v := range map[string]*torch.Tensor{"y": taps.Y, "fc": taps.FC, "conv": taps.Conv, "local": taps.Local} {
					want[tap], _ = v.Float64s()
				}
			})
			for _, tap := range []string{"y", "fc", "conv", "local"} {
				model, err := embed.Open(p, embed.Options{Output: tap, Threads: 2})
				if err != nil {
					t.Fatal(err)
				}
				got, err := model.EmbedBatch(xs, 3)
				model.Close()
				if err != nil {
					t.Fatal(err)
				}
				var worst float64
				for i, row := range got {
					for j, v := range row {
						w := want[tap][i*len(row)+j]
						worst = math.Max(worst, math.Abs(float64(v)-w)/(1+math.Abs(w)))
					}
				}
				if worst > 1e-4 {
					t.Fatalf("%s: onnxruntime and libtorch differ by %g", tap, worst)
				}
			}
		})
	}
}

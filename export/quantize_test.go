package export

import (
	"fmt"
	"github.com/dimtorch/dimtorch/internal/testref"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// quantizeFor exports name (randomly initialised, BatchNorm statistics from
// a few batches), calibrates it on images and returns the float and int8
// model files.
func quantizeFor(t *testing.T, name string, calib []float32, n int) (string, string) {
	t.Helper()
	_ = torch.ManualSeed(5)
	enc, err := models.New(models.Config{Name: name, InChannels: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	s := torch.NewScope()
	in := enc.Spec().Input
	for i := 0; i < 3; i++ {
		enc.Encode(torch.Randn([]int64{8, int64(in[0]), int64(in[1]), int64(in[2])}, s))
	}
	s.Close()
	enc.Train(false)
	m, err := Model(enc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	float, aug := filepath.Join(dir, "float.onnx"), filepath.Join(dir, "calibration.onnx")
	values := CalibrationValues(m)
	if err := Write(float, m); err != nil {
		t.Fatal(err)
	}
	if err := Write(aug, WithOutputs(m, values)); err != nil {
		t.Fatal(err)
	}
	raw, err := embed.Ranges(aug, embed.Options{Threads: 2}, calib, n, 16, values)
	if err != nil {
		t.Fatal(err)
	}
	ranges := map[string]Range{}
	for k, v := range raw {
		ranges[k] = Range{v[0], v[1]}
	}
	q, err := Quantize(m, ranges, fmt.Sprintf("min-max over %d images", n))
	if err != nil {
		t.Fatal(err)
	}
	var int8s, dqs int
	for _, init := range q.Graph.Initializer {
		if init.GetDataType() == int32(onnxpb.TensorProto_INT8) && len(init.GetDims()) >= 2 {
			int8s++
		}
	}
	for _, nd := range q.Graph.Node {
		if nd.GetOpType() == "DequantizeLinear" {
			dqs++
		}
	}
	if int8s == 0 || dqs == 0 {
		t.Fatalf("%s: %d int8 weights, %d DequantizeLinear nodes", name, int8s, dqs)
	}
	qp := filepath.Join(dir, "int8.onnx")
	if err := Write(qp, q); err != nil {
		t.Fatal(err)
	}
	return float, qp
}

// The int8 model of every encoder runs in onnxruntime and its embeddings
// point where the float model's do (cosine similarity), on images like the
// calibration images but not the same.
func TestQuantizedMatchesFloat(t *testing.T) {
	needORT(t)
	rng := rand.New(rand.NewPCG(1, 2))
	// The least similarity allowed, centred: measured on these randomly
	// initialised networks 0.999 (dcgan32, basic28), 0.89 (resnet32), 0.93
	// (alex64) and 0.82 (fold-multi-alex64), whose untrained embeddings
	// differ little between images; trained models are judged by the probe
	// (README).
	floor := map[string]float64{"dcgan32": 0.995, "basic28": 0.995, "resnet32": 0.8, "alex64": 0.85, "fold-multi-alex64": 0.7}
	for _, name := range []string{"dcgan32", "basic28", "resnet32", "alex64", "fold-multi-alex64"} {
		t.Run(name, func(t *testing.T) {
			h, w, _ := models.InputSize(name)
			per := 3 * h * w
			image := func(n int) []float32 {
				// smooth random images: a few gradients, not white noise
				out := make([]float32, n*per)
				for i := 0; i < n; i++ {
					a, b, c := rng.Float64(), rng.Float64(), rng.Float64()
					for ch := 0; ch < 3; ch++ {
						for y := 0; y < h; y++ {
							for x := 0; x < w; x++ {
								v := 0.5 + 0.5*math.Sin(a*float64(x)/3+b*float64(y)/4+c*float64(ch)*2)
								out[i*per+(ch*h+y)*w+x] = float32(v)
							}
						}
					}
				}
				return out
			}
			calib := image(48)
			fp, qp := quantizeFor(t, name, calib, 48)
			test := image(16)
			var vecs [2][][]float32
			for i, p := range []string{fp, qp} {
				m, err := embed.Open(p, embed.Options{Threads: 2})
				if err != nil {
					t.Fatal(err)
				}
				vecs[i], err = m.EmbedBatch(test, 16)
				m.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			// Centred on the float embeddings' mean, so that a shared
			// offset cannot hide the differences between images.
			dim := len(vecs[0][0])
			mean := make([]float64, dim)
			for _, v := range vecs[0] {
				for j, x := range v {
					mean[j] += float64(x) / float64(len(vecs[0]))
				}
			}
			worst := 1.0
			for i := range vecs[0] {
				var dot, na, nb float64
				for j := range vecs[0][i] {
					a, b := float64(vecs[0][i][j])-mean[j], float64(vecs[1][i][j])-mean[j]
					dot, na, nb = dot+a*b, na+a*a, nb+b*b
				}
				worst = math.Min(worst, dot/math.Sqrt(na*nb))
			}
			if !(worst > floor[name]) {
				t.Errorf("int8 embeddings: cosine similarity to float (centred) down to %.4f", worst)
			}
			t.Logf("%s: worst centred cosine similarity of int8 to float %.4f", name, worst)
			testref.CheckONNX(t, qp)
		})
	}
}

package eval

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// SSIM against scikit-image and MS-SSIM against an independent NumPy/SciPy
// implementation (testdata/gen_ssim.py).
func TestSSIMAgainstReferences(t *testing.T) {
	b, err := os.ReadFile("testdata/ssim.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []struct {
			H, W   int64
			X, Y   []float64
			SSIM   float64 `json:"ssim"`
			Scales int     `json:"scales"`
			MSSSIM float64 `json:"msssim"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.Cases {
		s := torch.NewScope()
		x := torch.FromSlice(c.X, []int64{1, 1, c.H, c.W}, s)
		y := torch.FromSlice(c.Y, []int64{1, 1, c.H, c.W}, s)
		ss, err := SSIM(x, y, SSIMOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(ss[0]-c.SSIM) > 1e-4 {
			t.Errorf("%dx%d: SSIM %.6f, scikit-image %.6f", c.H, c.W, ss[0], c.SSIM)
		}
		ms, scales, err := MSSSIM(x, y, SSIMOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if scales != c.Scales || math.Abs(ms[0]-c.MSSSIM) > 1e-4 {
			t.Errorf("%dx%d: MS-SSIM %.6f over %d scales, reference %.6f over %d", c.H, c.W, ms[0], scales, c.MSSSIM, c.Scales)
		}
		s.Close()
	}
}

func TestSSIMKnownValues(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	x := torch.Rand([]int64{2, 3, 32, 32}, s).MulScalar(2).SubScalar(1)
	same, err := SSIM(x, x, SSIMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms, _, _ := MSSSIM(x, x, SSIMOptions{})
	for i := range same {
		if math.Abs(same[i]-1) > 1e-5 || math.Abs(ms[i]-1) > 1e-5 {
			t.Fatalf("identical images: SSIM %v, MS-SSIM %v", same[i], ms[i])
		}
	}
	// Against a flat image there is no shared structure: SSIM is near 0.
	flat, _ := SSIM(x, torch.ZerosLike(x), SSIMOptions{})
	if math.Abs(flat[0]) > 0.05 {
		t.Fatalf("SSIM of noise and a flat image: %v", flat[0])
	}
	// A uniform brightness shift keeps the structure (cs = 1) and lowers only
	// the luminance term: mean 0.5 against 0.6 gives 2*0.5*0.6/(0.25+0.36).
	bright := x.MulScalar(0.25).AddScalar(0.5)
	shift, _ := SSIM(bright, bright.AddScalar(0.1), SSIMOptions{})
	if !(shift[0] < 0.999 && shift[0] > 0.97) {
		t.Fatalf("SSIM of a brightness shift: %v", shift[0])
	}
	if _, err := SSIM(x, torch.Zeros([]int64{2, 3, 8, 8}, s), SSIMOptions{}); err == nil {
		t.Fatal("mismatched shapes accepted")
	}
}

// A decoder from an informative code reconstructs better than from noise.
func TestReconstructionMSSSIM(t *testing.T) {
	_ = torch.ManualSeed(8)
	s := torch.NewScope()
	defer s.Close()
	// Images are smooth blobs whose position is given by a 2-D code.
	n := int64(600)
	code := torch.Rand([]int64{n, 2}, s)
	grid := torch.Arange(0, 28, 1, s).DivScalar(27)
	gy := grid.Reshape(1, 28, 1).Sub(code.Narrow(1, 0, 1).Reshape(n, 1, 1))
	gx := grid.Reshape(1, 1, 28).Sub(code.Narrow(1, 1, 1).Reshape(n, 1, 1))
	imgs := gy.Square().Add(gx.Square()).MulScalar(-20).Exp().MulScalar(2).SubScalar(1).Unsqueeze(1)
	noise := torch.Randn([]int64{n, 2}, s)
	split := func(v *torch.Tensor) (*torch.Tensor, *torch.Tensor) {
		return v.Narrow(0, 0, 500), v.Narrow(0, 500, 100)
	}
	ctr, cte := split(code)
	itr, ite := split(imgs)
	ntr, nte := split(noise)
	o := DecoderOptions{Epochs: 20, Seed: 1}
	good, scales, err := ReconstructionMSSSIM(ctr, itr, cte, ite, o)
	if err != nil {
		t.Fatal(err)
	}
	bad, _, err := ReconstructionMSSSIM(ntr, itr, nte, ite, o)
	if err != nil {
		t.Fatal(err)
	}
	if scales != 2 || !(good > bad+0.1) {
		t.Fatalf("MS-SSIM from the code %v, from noise %v (%d scales)", good, bad, scales)
	}
}

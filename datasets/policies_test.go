package datasets

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func testImage(c, h, w int, seed uint64) Image {
	rng := rand.New(rand.NewPCG(seed, 1))
	img := NewImage(c, h, w)
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.IntN(256))
	}
	return img
}

// A translation moves every pixel by the drawn offsets and fills what is
// uncovered with the mirror image of the border (edge pixel not repeated).
func TestRandomTranslate(t *testing.T) {
	img := testImage(2, 9, 7, 3)
	seen := map[[2]int]bool{}
	for seed := uint64(0); seed < 1000; seed++ {
		out := RandomTranslate(3).Apply(img, rand.New(rand.NewPCG(seed, 0)))
		draw := rand.New(rand.NewPCG(seed, 0))
		dy, dx := draw.IntN(7)-3, draw.IntN(7)-3
		seen[[2]int{dy, dx}] = true
		for c := 0; c < img.C; c++ {
			for y := 0; y < img.H; y++ {
				for x := 0; x < img.W; x++ {
					sy, sx := y-dy, x-dx
					if sy < 0 {
						sy = -sy
					}
					if sy >= img.H {
						sy = 2*(img.H-1) - sy
					}
					if sx < 0 {
						sx = -sx
					}
					if sx >= img.W {
						sx = 2*(img.W-1) - sx
					}
					if got, want := out.Pix[(c*img.H+y)*img.W+x], img.Pix[(c*img.H+sy)*img.W+sx]; got != want {
						t.Fatalf("shift (%d, %d): pixel (%d, %d, %d) is %d, want %d", dy, dx, c, y, x, got, want)
					}
				}
			}
		}
	}
	if len(seen) != 49 {
		t.Errorf("%d of the 49 offsets drawn in 1000 tries", len(seen))
	}
}

// The colour operations against their closed forms.
func TestColorOperations(t *testing.T) {
	img := testImage(3, 5, 6, 7)
	n := img.H * img.W
	lumaOf := func(i int) float64 {
		return 0.299*float64(img.Pix[i]) + 0.587*float64(img.Pix[n+i]) + 0.114*float64(img.Pix[2*n+i])
	}
	f := toFloat(img)
	brightness(f, 1.5)
	for c := range f {
		for i, v := range f[c] {
			if want := math.Min(255, 1.5*float64(img.Pix[c*n+i])); math.Abs(v-want) > 1e-9 {
				t.Fatalf("brightness 1.5: %v, want %v", v, want)
			}
		}
	}
	f = toFloat(img)
	contrast(f, 0)
	var mean float64
	for i := 0; i < n; i++ {
		mean += lumaOf(i) / float64(n)
	}
	for c := range f {
		for _, v := range f[c] {
			if math.Abs(v-mean) > 1e-9 {
				t.Fatalf("contrast 0: %v, want the mean luma %v", v, mean)
			}
		}
	}
	grey := RandomGrayscale(1).Apply(img, rand.New(rand.NewPCG(1, 1)))
	for i := 0; i < n; i++ {
		want := uint8(math.Round(lumaOf(i)))
		if grey.Pix[i] != want || grey.Pix[n+i] != want || grey.Pix[2*n+i] != want {
			t.Fatalf("greyscale pixel %d: %d %d %d, want %d", i, grey.Pix[i], grey.Pix[n+i], grey.Pix[2*n+i], want)
		}
	}
	// A third of the colour circle takes red to green and green to blue; a
	// whole turn, or a turn there and back, changes nothing.
	prim := rgb{{255, 0, 40}, {0, 255, 40}, {0, 0, 40}}
	hueShift(prim, 1.0/3)
	if want := (rgb{{0, 0, 40}, {255, 0, 40}, {0, 255, 40}}); !closeRGB(prim, want, 1e-9) {
		t.Fatalf("hue +1/3: %v, want %v", prim, want)
	}
	f = toFloat(img)
	hueShift(f, 0.37)
	hueShift(f, -0.37)
	if !closeRGB(f, toFloat(img), 1e-6) {
		t.Fatal("hue shifted there and back differs")
	}
	// Jitter leaves one-channel images alone, and with zero strengths
	// changes nothing.
	one := testImage(1, 4, 4, 2)
	if got := ColorJitter(0.4, 0.4, 0.4, 0.2).Apply(one, rand.New(rand.NewPCG(1, 2))); string(got.Pix) != string(one.Pix) {
		t.Error("jitter changed a one-channel image")
	}
	if got := ColorJitter(0, 0, 0, 0).Apply(img, rand.New(rand.NewPCG(1, 2))); string(got.Pix) != string(img.Pix) {
		t.Error("jitter of strength 0 changed the image")
	}
}

func closeRGB(a, b rgb, tol float64) bool {
	for c := range a {
		for i := range a[c] {
			if math.Abs(a[c][i]-b[c][i]) > tol {
				return false
			}
		}
	}
	return true
}

// Each policy resolves for each kind of dataset to what its documentation
// says.
func TestPolicies(t *testing.T) {
	for _, c := range []struct {
		policy, data string
		h, w         int
		want         []string // in the transform's description
		not          []string
	}{
		{"none", "fashion-mnist", 28, 28, nil, nil},
		{"none", "stl10", 64, 64, []string{"random_resized_crop(64x64"}, nil},
		{"crops", "mnist", 28, 28, []string{"random_crop"}, []string{"hflip"}},
		{"resized-crops", "fashion-mnist", 28, 28, []string{"scale 0.4-1", "hflip"}, nil},
		{"amdim", "fashion-mnist", 28, 28, []string{"hflip", "translate(4)(p=0.8)", "color_jitter", "grayscale(p=0.25)"}, []string{"random_resized_crop"}},
		{"amdim", "mnist", 28, 28, []string{"translate"}, []string{"hflip"}},
		{"amdim", "cifar10", 28, 28, []string{"translate(4)"}, nil},
		{"amdim", "stl10", 64, 64, []string{"random_resized_crop(64x64, scale 0.3-1, ratio 0.7-1.4)", "color_jitter"}, []string{"translate"}},
	} {
		tr, err := Augmentation(c.policy, c.data, c.h, c.w, 0)
		if err != nil {
			t.Fatal(err)
		}
		desc := "none"
		if tr != nil {
			desc = tr.String()
		}
		if c.want == nil && tr != nil {
			t.Errorf("%s on %s: %s, want nothing", c.policy, c.data, desc)
		}
		for _, w := range c.want {
			if !strings.Contains(desc, w) {
				t.Errorf("%s on %s: %s, want %s", c.policy, c.data, desc, w)
			}
		}
		for _, w := range c.not {
			if strings.Contains(desc, w) {
				t.Errorf("%s on %s: %s, want no %s", c.policy, c.data, desc, w)
			}
		}
	}
	if _, err := Augmentation("autoaugment", "cifar10", 32, 32, 0); err == nil || !strings.Contains(err.Error(), "amdim") {
		t.Errorf("unknown policy: %v", err)
	}
}

// The few-label subset: the first n images of each class, in order; a
// class with fewer is named.
func TestPerClass(t *testing.T) {
	labels := []int{3, 0, 3, 1, 0, 3, 2, 1, 0, 2, 3, 1, 2, 0}
	m := &memory{shape: Shape{1, 2, 2}, classes: []string{"a", "b", "c", "d"}, pix: make([]uint8, 4*len(labels)), labels: labels}
	for i := range labels {
		m.pix[4*i] = uint8(i) // each image knows its index
	}
	d, err := PerClass(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for i := 0; i < d.Len(); i++ {
		img, _, err := d.Image(i)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, int(img.Pix[0]))
	}
	if want := []int{0, 1, 2, 3, 4, 6, 7, 9}; !slices.Equal(got, want) {
		t.Fatalf("indices %v, want %v", got, want)
	}
	if _, err := PerClass(m, 4); err == nil || !strings.Contains(err.Error(), `class "b" has 3 images`) {
		t.Fatalf("too few: %v", err)
	}
}

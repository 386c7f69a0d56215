package datasets

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// STL-10, binary version: *_X.bin hold 96x96 RGB images, each channel stored
// column-major (x varies slowest); *_y.bin hold one label byte per image,
// 1..10. The unlabeled split (100,000 images, 2.6 GiB) is read from disk on
// demand rather than loaded into memory. Training and evaluation bring the
// images to 64x64 first (DefaultTransform, by the rule preproc.DataSize that
// exported models record).

const stlSide = 96
const stlPixels = 3 * stlSide * stlSide

func init() {
	register(&spec{
		name:   "stl10",
		size:   96,
		splits: []Split{Train, Test, Unlabeled},
		open: func(dir string, split Split) (Dataset, error) {
			return openSTL10(subdirWith(dir, "stl10_binary"), split)
		},
		files:    []string{"stl10_binary", "test_X.bin", "train_X.bin", "unlabeled_X.bin"},
		howToGet: "Run `dimtorch data download stl10` (the binary version, 2.5 GiB).",
	})
}

var stlClasses = []string{"airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"}

type stl10 struct {
	path    string
	f       *os.File
	n       int
	labels  []int
	classes []string
	bufs    sync.Pool
}

func openSTL10(dir string, split Split) (Dataset, error) {
	xp := filepath.Join(dir, string(split)+"_X.bin")
	f, err := os.Open(xp)
	if err != nil {
		return nil, fmt.Errorf("%v (the dataset is incomplete: download it again)", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() == 0 || st.Size()%stlPixels != 0 {
		f.Close()
		return nil, fmt.Errorf("%s: %d bytes is not a whole number of %d-byte images (truncated?)", xp, st.Size(), stlPixels)
	}
	d := &stl10{path: xp, f: f, n: int(st.Size() / stlPixels)}
	d.bufs.New = func() any { b := make([]byte, stlPixels); return &b }
	if split == Unlabeled {
		return d, nil
	}
	yp := filepath.Join(dir, string(split)+"_y.bin")
	lab, err := os.ReadFile(yp)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%v (the dataset is incomplete: download it again)", err)
	}
	if len(lab) != d.n {
		f.Close()
		return nil, fmt.Errorf("%s holds %d images but %s holds %d labels: the files do not belong together", xp, d.n, yp, len(lab))
	}
	d.labels = make([]int, d.n)
	for i, l := range lab {
		if l < 1 || l > 10 {
			f.Close()
			return nil, fmt.Errorf("%s: label %d of image %d is outside 1..10", yp, l, i)
		}
		d.labels[i] = int(l) - 1
	}
	d.classes = readNames(filepath.Join(dir, "class_names.txt"), stlClasses)
	return d, nil
}

func (d *stl10) Len() int          { return d.n }
func (d *stl10) Shape() Shape      { return Shape{3, stlSide, stlSide} }
func (d *stl10) Classes() []string { return d.classes }

func (d *stl10) Image(i int) (Image, int, error) {
	if i < 0 || i >= d.n {
		return Image{}, 0, fmt.Errorf("image index %d out of range [0, %d)", i, d.n)
	}
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	b := *bp
	if _, err := d.f.ReadAt(b, int64(i)*stlPixels); err != nil {
		return Image{}, 0, fmt.Errorf("%s: image %d: %v", d.path, i, err)
	}
	img := NewImage(3, stlSide, stlSide)
	// Transpose each channel from column-major to row-major.
	for c := 0; c < 3; c++ {
		src := b[c*stlSide*stlSide:]
		dst := img.Pix[c*stlSide*stlSide:]
		for x := 0; x < stlSide; x++ {
			for y := 0; y < stlSide; y++ {
				dst[y*stlSide+x] = src[x*stlSide+y]
			}
		}
	}
	label := -1
	if d.labels != nil {
		label = d.labels[i]
	}
	return img, label, nil
}

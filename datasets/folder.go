package datasets

import (
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // register the JPEG decoder
	_ "image/png"  // register the PNG decoder
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Image folders. folder:PATH is either one split or, when PATH has train/
// (and test/ or val/) subdirectories, several. A split directory holds either
// one subdirectory per class (searched recursively, so Tiny ImageNet's
// class/images/*.JPEG works) or image files directly (unlabeled).

func isImageFile(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// folderSplits lists the splits of folder:PATH.
func folderSplits(path string) ([]Split, error) {
	if !isDir(path) {
		return nil, fmt.Errorf("folder:%s: not a directory", path)
	}
	if !isDir(filepath.Join(path, "train")) {
		return []Split{Train}, nil
	}
	s := []Split{Train}
	if isDir(filepath.Join(path, "test")) || isDir(filepath.Join(path, "val")) {
		s = append(s, Test)
	}
	return s, nil
}

func folderSplitDir(path string, split Split) (string, error) {
	if !isDir(path) {
		return "", fmt.Errorf("folder:%s: not a directory", path)
	}
	if !isDir(filepath.Join(path, "train")) {
		if split != Train {
			return "", fmt.Errorf("folder:%s: %w %q (it has no train/ and test/ subdirectories, so the whole folder is the train split)", path, ErrNoSplit, split)
		}
		return path, nil
	}
	switch split {
	case Train:
		return filepath.Join(path, "train"), nil
	case Test:
		for _, n := range []string{"test", "val"} {
			if p := filepath.Join(path, n); isDir(p) {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("folder:%s: %w %q", path, ErrNoSplit, split)
}

type folder struct {
	root    string
	files   []string
	labels  []int // nil when unlabeled
	classes []string
	shape   Shape
}

// OpenFolder opens one split of a folder of images. Every image's header is
// checked, so an unreadable file is reported now, by name, rather than in
// the middle of training.
func OpenFolder(path string, split Split) (Dataset, error) {
	dir, err := folderSplitDir(path, split)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	f := &folder{root: dir}
	var flat []string
	for _, e := range entries {
		switch {
		case e.IsDir():
			var files []string
			err := filepath.WalkDir(filepath.Join(dir, e.Name()), func(p string, d os.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if !d.IsDir() && isImageFile(p) {
					files = append(files, p)
				}
				return nil
			})
			if err != nil {
				return nil, err
			}
			if len(files) == 0 {
				continue
			}
			sort.Strings(files)
			for _, p := range files {
				f.files = append(f.files, p)
				f.labels = append(f.labels, len(f.classes))
			}
			f.classes = append(f.classes, e.Name())
		case isImageFile(e.Name()):
			flat = append(flat, filepath.Join(dir, e.Name()))
		}
	}
	switch {
	case len(f.classes) > 0 && len(flat) > 0:
		return nil, fmt.Errorf("%s mixes image files (%s, ...) with class subdirectories: put every image in a class folder, or none", dir, filepath.Base(flat[0]))
	case len(f.classes) == 0 && len(flat) == 0:
		return nil, fmt.Errorf("%s holds no PNG or JPEG images", dir)
	case len(flat) > 0:
		f.files = flat
		f.labels = nil
	}
	if err := f.checkHeaders(); err != nil {
		return nil, err
	}
	return f, nil
}

// checkHeaders reads every image's header in parallel; the first image sets
// the dataset's shape (1 channel when it is grayscale, else 3).
func (f *folder) checkHeaders() error {
	cfgs := make([]image.Config, len(f.files))
	errs := make([]error, len(f.files))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0)*2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				cfgs[i], errs[i] = decodeConfig(f.files[i])
			}
		}()
	}
	for i := range f.files {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	c := 3
	if isGray(cfgs[0].ColorModel) {
		c = 1
	}
	f.shape = Shape{c, cfgs[0].Height, cfgs[0].Width}
	return nil
}

func decodeConfig(p string) (image.Config, error) {
	r, err := os.Open(p)
	if err != nil {
		return image.Config{}, err
	}
	defer r.Close()
	cfg, _, err := image.DecodeConfig(r)
	if err != nil {
		return cfg, fmt.Errorf("%s: unreadable image: %v", p, err)
	}
	return cfg, nil
}

func isGray(m color.Model) bool { return m == color.GrayModel || m == color.Gray16Model }

func (f *folder) Len() int          { return len(f.files) }
func (f *folder) Shape() Shape      { return f.shape }
func (f *folder) Classes() []string { return f.classes }

func (f *folder) Image(i int) (Image, int, error) {
	if i < 0 || i >= len(f.files) {
		return Image{}, 0, fmt.Errorf("image index %d out of range [0, %d)", i, len(f.files))
	}
	p := f.files[i]
	b, err := os.ReadFile(p)
	if err != nil {
		return Image{}, 0, err
	}
	img, err := decodeImage(b, f.shape.C, reducedSide)
	if err != nil {
		return Image{}, 0, fmt.Errorf("%s: unreadable image: %v", p, err)
	}
	label := -1
	if f.labels != nil {
		label = f.labels[i]
	}
	return img, label, nil
}

// FromGoImage converts an image.Image to channels (1 = luminance, 3 = RGB)
// in CHW layout.
func FromGoImage(src image.Image, channels int) Image {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	out := NewImage(channels, h, w)
	plane := w * h
	switch s := src.(type) {
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+w]
			if channels == 1 {
				copy(out.Pix[y*w:], row)
				continue
			}
			for x, v := range row {
				out.Pix[y*w+x], out.Pix[plane+y*w+x], out.Pix[2*plane+y*w+x] = v, v, v
			}
		}
		return out
	case *image.NRGBA:
		if channels == 3 {
			for y := 0; y < h; y++ {
				row := s.Pix[y*s.Stride : y*s.Stride+4*w]
				for x := 0; x < w; x++ {
					out.Pix[y*w+x], out.Pix[plane+y*w+x], out.Pix[2*plane+y*w+x] = row[4*x], row[4*x+1], row[4*x+2]
				}
			}
			return out
		}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := src.At(b.Min.X+x, b.Min.Y+y)
			if channels == 1 {
				out.Pix[y*w+x] = color.GrayModel.Convert(c).(color.Gray).Y
				continue
			}
			r, g, bl, _ := c.RGBA()
			out.Pix[y*w+x], out.Pix[plane+y*w+x], out.Pix[2*plane+y*w+x] = uint8(r>>8), uint8(g>>8), uint8(bl>>8)
		}
	}
	return out
}

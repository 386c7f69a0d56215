// Package datasets reads image datasets from their official file formats,
// augments them and batches them into tensors with a parallel, deterministic
// loader.
//
// Readers: IDX (MNIST, Fashion-MNIST; raw or gzipped), the binary versions of
// CIFAR-10 and CIFAR-100, the binary STL-10 (with its 100,000-image unlabeled
// split) and folders of PNG/JPEG images (one subfolder per class, or flat and
// unlabeled). Open resolves a name such as "fashion-mnist" or "folder:PATH"
// to files (see Locate) and returns a Dataset for one split.
package datasets

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/dimtorch/dimtorch/internal/preproc"
)

// Image is an 8-bit image in channel-major (CHW) layout.
type Image struct {
	C, H, W int
	Pix     []uint8 // len C*H*W; Pix[(c*H+y)*W+x]
}

// NewImage returns a black image.
func NewImage(c, h, w int) Image { return Image{C: c, H: h, W: w, Pix: make([]uint8, c*h*w)} }

// At returns the value of channel c at (x, y).
func (m Image) At(c, y, x int) uint8 { return m.Pix[(c*m.H+y)*m.W+x] }

// Shape is an image's channels, height and width.
type Shape struct {
	C int `json:"channels"`
	H int `json:"height"`
	W int `json:"width"`
}

func (s Shape) String() string { return fmt.Sprintf("%dx%dx%d", s.C, s.H, s.W) }

// Dataset is one split of a dataset: a fixed number of images with optional
// labels. Implementations are safe for concurrent use.
type Dataset interface {
	// Len returns the number of images.
	Len() int
	// Shape returns the images' shape; for folders of images of different
	// sizes it is the first image's, and Image returns each at its own size.
	Shape() Shape
	// Classes returns the class names, or nil for unlabeled data.
	Classes() []string
	// Image returns image i and its label (-1 when unlabeled). Errors name
	// the file and what is wrong with it.
	Image(i int) (Image, int, error)
}

// Split names a part of a dataset.
type Split string

// The splits.
const (
	Train     Split = "train"
	Test      Split = "test"
	Unlabeled Split = "unlabeled"
)

// ParseSplit reads "train", "test" or "unlabeled".
func ParseSplit(s string) (Split, error) {
	switch Split(s) {
	case Train, Test, Unlabeled:
		return Split(s), nil
	}
	return "", fmt.Errorf("unknown split %q (want train, test or unlabeled)", s)
}

// ErrNoSplit reports a split the dataset does not have.
var ErrNoSplit = errors.New("dataset has no such split")

// spec describes one named dataset.
type spec struct {
	name     string
	splits   []Split
	augment  Transform // optional training augmentation (--augment) for native-size datasets
	noFlip   bool      // mirrored images change their class (digits)
	size     int       // the images' side in pixels (0: they vary)
	open     func(dir string, split Split) (Dataset, error)
	files    []string // files whose presence identifies the dataset directory
	howToGet string
}

var registry = map[string]*spec{}

func register(s *spec) { registry[s.name] = s }

// Names lists the built-in dataset names (besides folder:PATH).
func Names() []string {
	return slices.Sorted(maps.Keys(registry))
}

func lookup(name string) (*spec, error) {
	if s, ok := registry[strings.ToLower(name)]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("unknown dataset %q (known: %s, or folder:PATH, shards:DIR)", name, strings.Join(Names(), ", "))
}

// Splits returns the splits a dataset offers. For folder:PATH it looks at
// the directory.
func Splits(name, dataDir string) ([]Split, error) {
	if path, ok := strings.CutPrefix(name, "folder:"); ok {
		return folderSplits(path)
	}
	if dir, ok := strings.CutPrefix(name, ShardsPrefix); ok {
		return shardSplits(dir)
	}
	s, err := lookup(name)
	if err != nil {
		return nil, err
	}
	return s.splits, nil
}

// Open returns one split of a dataset: a built-in name resolved with Locate
// (dataDir overrides the search), or "folder:PATH".
func Open(name string, split Split, dataDir string) (Dataset, error) {
	if path, ok := strings.CutPrefix(name, "folder:"); ok {
		return OpenFolder(path, split)
	}
	if dir, ok := strings.CutPrefix(name, ShardsPrefix); ok {
		return OpenShardDataset(dir, split)
	}
	s, err := lookup(name)
	if err != nil {
		return nil, err
	}
	if !hasSplit(s.splits, split) {
		return nil, fmt.Errorf("%s: %w %q (it has %v)", s.name, ErrNoSplit, split, s.splits)
	}
	dir, err := Locate(s, dataDir)
	if err != nil {
		return nil, err
	}
	return s.open(dir, split)
}

// DefaultTransform returns the dataset's standard augmentation for a split:
// none for the 28x28 and 32x32 datasets (native size, as in the original),
// random 64x64 crops with flips for STL-10 and image folders when training,
// and a resize to 64x64 otherwise. The size is the data's (preproc.DataSize),
// the rule that exported models record and package embed follows.
func DefaultTransform(name string, split Split) Transform {
	if h, w, ok := preproc.DataSize(name); ok {
		return dataCrops(h, w, split)
	}
	return nil
}

// InputTransform is how the images of a dataset (of shape s) are fed to an
// encoder whose input is h x w, outside training: the dataset's test
// transform (STL-10 and folders: 64x64 first, preproc's rule), then a resize
// to the input. It is nil when neither would change an image. Training's
// test split, evaluation and (through preproc) exported models follow it.
func InputTransform(name string, s Shape, h, w int) Transform {
	t := DefaultTransform(name, Test)
	switch {
	case t == nil && s.H == h && s.W == w:
		return nil
	case t == nil:
		return Resize(h, w)
	}
	return Compose(t, Resize(h, w))
}

// AugmentTransform returns the optional training augmentation of a dataset
// (dimtorch train --augment): random crops after padding, and horizontal
// flips where they preserve the classes (not for digits). It is the default
// transform for datasets that already augment by default (STL-10, folders).
func AugmentTransform(name string) Transform {
	if s, err := lookup(name); err == nil && s.augment != nil {
		return s.augment
	}
	return DefaultTransform(name, Train)
}

// ScaleAugment returns random resized crops to h x w covering between
// minScale and all of the image's area (aspect ratios 3/4 to 4/3), with
// horizontal flips unless they change the dataset's classes (digits): the
// stronger augmentation of dimtorch train --crop-scale, for multi-view
// training.
func ScaleAugment(name string, h, w int, minScale float64) Transform {
	crop := RandomResizedCrop(h, w, minScale, 1)
	if s, err := lookup(name); err == nil && s.noFlip {
		return Compose(crop)
	}
	return Compose(crop, HorizontalFlip(0.5))
}

// dataCrops brings images to the data's size h x w: random crops (30% to
// all of the area) with flips when training, a resize otherwise.
func dataCrops(h, w int, split Split) Transform {
	if split == Test {
		return Compose(Resize(h, w))
	}
	return Compose(RandomResizedCrop(h, w, 0.3, 1), HorizontalFlip(0.5))
}

func hasSplit(ss []Split, s Split) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Subset returns the first n images of d (all when n <= 0 or n >= Len).
func Subset(d Dataset, n int) Dataset {
	if n <= 0 || n >= d.Len() {
		return d
	}
	return &subset{Dataset: d, n: n}
}

type subset struct {
	Dataset
	n int
}

func (s *subset) Len() int { return s.n }

func (s *subset) Image(i int) (Image, int, error) {
	if i < 0 || i >= s.n {
		return Image{}, 0, fmt.Errorf("image index %d out of range [0, %d)", i, s.n)
	}
	return s.Dataset.Image(i)
}

// PerClass returns the first n images of each class of d, in d's order
// (the few-label protocol: a balanced labelled subset that every run
// draws alike). A class with fewer than n images is an error.
func PerClass(d Dataset, n int) (Dataset, error) {
	k := len(d.Classes())
	if k == 0 {
		return nil, fmt.Errorf("the dataset is unlabeled: it has no classes to take %d images of", n)
	}
	if n < 1 {
		return nil, fmt.Errorf("images per class must be at least 1, got %d", n)
	}
	count := make([]int, k)
	var idx []int
	for i := 0; i < d.Len() && len(idx) < n*k; i++ {
		_, label, err := d.Image(i)
		if err != nil {
			return nil, err
		}
		if label < 0 || label >= k {
			return nil, fmt.Errorf("image %d has label %d, outside the %d classes", i, label, k)
		}
		if count[label] < n {
			count[label]++
			idx = append(idx, i)
		}
	}
	for c, got := range count {
		if got < n {
			return nil, fmt.Errorf("class %q has %d images, fewer than the %d asked for", d.Classes()[c], got, n)
		}
	}
	return &indexed{Dataset: d, idx: idx}, nil
}

// indexed is the images of d at the given indices.
type indexed struct {
	Dataset
	idx []int
}

func (s *indexed) Len() int { return len(s.idx) }

func (s *indexed) Image(i int) (Image, int, error) {
	if i < 0 || i >= len(s.idx) {
		return Image{}, 0, fmt.Errorf("image index %d out of range [0, %d)", i, len(s.idx))
	}
	return s.Dataset.Image(s.idx[i])
}

// memory is a dataset held in memory: n images of one shape, concatenated.
type memory struct {
	shape   Shape
	pix     []uint8
	labels  []int // nil when unlabeled
	classes []string
}

func (m *memory) Len() int          { return len(m.pix) / (m.shape.C * m.shape.H * m.shape.W) }
func (m *memory) Shape() Shape      { return m.shape }
func (m *memory) Classes() []string { return m.classes }

func (m *memory) Image(i int) (Image, int, error) {
	n := m.shape.C * m.shape.H * m.shape.W
	if i < 0 || i >= m.Len() {
		return Image{}, 0, fmt.Errorf("image index %d out of range [0, %d)", i, m.Len())
	}
	img := Image{C: m.shape.C, H: m.shape.H, W: m.shape.W, Pix: m.pix[i*n : (i+1)*n : (i+1)*n]}
	label := -1
	if m.labels != nil {
		label = m.labels[i]
	}
	return img, label, nil
}

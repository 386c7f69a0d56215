// Package preproc says how an image becomes a dimtorch model's input: the
// size rule the training data follows (For, DataSize) and the record of it
// that export writes into an ONNX model's metadata and embed reads back
// (Spec, Key, Parse). It depends on the standard library only, so that
// package datasets (libtorch) and package embed (no libtorch) share it.
package preproc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// Key is the ONNX metadata_props entry holding a model's Spec as JSON.
const Key = "dimtorch.preprocessing"

// Version is the Spec version this package writes and reads.
const Version = 1

// Colour modes of a Spec.
const (
	// Gray is one channel: the image's luma (ITU-R 601, as Go's
	// color.GrayModel), or the grey level of a grayscale image.
	Gray = "gray"
	// RGB is three channels, red, green and blue; a grayscale image gives
	// its grey level in each.
	RGB = "rgb"
)

// Bilinear is the only resampling dimtorch uses: bilinear, pixel centres
// aligned (PyTorch's align_corners=False), no antialiasing, on 8-bit
// planes, rounded to the nearest integer after each resize (package imgops).
const Bilinear = "bilinear"

// InGraph describes what an exported graph does with its input before the
// encoder (export.Model's first nodes).
const InGraph = "2x-1: the exported graph maps its input to the [-1, 1] the encoder was trained on"

// DataSide is the side of the square that STL-10 and image folders are
// brought to before anything else (training's random crops and evaluation's
// resize, datasets.DefaultTransform).
const DataSide = 64

// DataSize returns the size every image of the named training data is first
// brought to, when the data has one: 64 x 64 for STL-10 (its 96 x 96 images)
// and for folder:PATH and shards:DIR (images of any size); ok is false for datasets used
// at their native size (MNIST, Fashion-MNIST, CIFAR).
func DataSize(data string) (h, w int, ok bool) {
	if strings.EqualFold(data, "stl10") || strings.HasPrefix(data, "folder:") || strings.HasPrefix(data, "shards:") {
		return DataSide, DataSide, true
	}
	return 0, 0, false
}

// Size is an image's height and width.
type Size struct {
	Height int `json:"height"`
	Width  int `json:"width"`
}

func (s Size) String() string { return fmt.Sprintf("%dx%d", s.Height, s.Width) }

// Spec is how to feed a model, as recorded under Key.
//
// An image is converted to Color (Channels planes of 8-bit values), resized
// bilinearly (Resample) through each size of Resize in turn, a step being
// skipped when the image already has that size (the last step is the
// input's Height x Width), and its 8-bit values v become
// Range[0] + (Range[1]-Range[0]) * v/255; with Mean and Std, channel c's
// values then become (x - Mean[c]) / Std[c]. InGraph says, for
// information, what the graph itself does with those values.
type Spec struct {
	Version  int       `json:"version"`
	Channels int       `json:"channels"`
	Height   int       `json:"height"`
	Width    int       `json:"width"`
	Color    string    `json:"color"`
	Resize   []Size    `json:"resize"`
	Resample string    `json:"resample"`
	Range    []float64 `json:"range"`
	Mean     []float64 `json:"mean,omitempty"`
	Std      []float64 `json:"std,omitempty"`
	InGraph  string    `json:"in_graph,omitempty"`
}

// For is the preprocessing of a dimtorch model of input c x h x w trained
// on the named data (train.Config.Data; "" when unknown): the data's own
// size first where it has one (DataSize), then the input's; values in
// [0, 1], no mean or standard deviation (the graph maps them to [-1, 1]).
// The colour mode is empty for a model of neither 1 nor 3 channels, which
// Validate refuses: images cannot be made for it.
func For(data string, c, h, w int) Spec {
	s := Spec{Version: Version, Channels: c, Height: h, Width: w, Resample: Bilinear, Range: []float64{0, 1}, InGraph: InGraph}
	switch c {
	case 1:
		s.Color = Gray
	case 3:
		s.Color = RGB
	}
	if dh, dw, ok := DataSize(data); ok && (dh != h || dw != w) {
		s.Resize = append(s.Resize, Size{dh, dw})
	}
	s.Resize = append(s.Resize, Size{h, w})
	return s
}

// ErrInvalid reports a Spec that is malformed or that a reader cannot follow.
var ErrInvalid = errors.New("invalid preprocessing")

// maxSide bounds the sides of the sizes a Spec may name.
const maxSide = 1 << 15

// Validate checks that s is a Spec of this version that a reader can follow.
func (s Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if s.Version != Version {
		if s.Version > Version {
			return bad("version %d is newer than this program reads (%d): update dimtorch", s.Version, Version)
		}
		return bad("version %d (want %d)", s.Version, Version)
	}
	if s.Height < 1 || s.Width < 1 || s.Height > maxSide || s.Width > maxSide {
		return bad("input size %dx%d", s.Height, s.Width)
	}
	switch {
	case s.Channels == 1 && s.Color == Gray, s.Channels == 3 && s.Color == RGB:
	default:
		return bad("color %q with %d channels (want %q with 1, %q with 3)", s.Color, s.Channels, Gray, RGB)
	}
	if s.Resample != Bilinear {
		return bad("resample %q (want %q)", s.Resample, Bilinear)
	}
	if len(s.Resize) == 0 {
		return bad("no resize steps (the last is the input's %dx%d)", s.Height, s.Width)
	}
	for i, r := range s.Resize {
		if r.Height < 1 || r.Width < 1 || r.Height > maxSide || r.Width > maxSide {
			return bad("resize step %d to %s", i, r)
		}
	}
	if last := s.Resize[len(s.Resize)-1]; last.Height != s.Height || last.Width != s.Width {
		return bad("the last resize step is %s, the input %dx%d", last, s.Height, s.Width)
	}
	if len(s.Range) != 2 || !finite(s.Range...) || !(s.Range[0] < s.Range[1]) {
		return bad("range %v (want [low, high] with low < high)", s.Range)
	}
	if (s.Mean == nil) != (s.Std == nil) {
		return bad("mean %v and std %v: give both or neither", s.Mean, s.Std)
	}
	if s.Mean != nil {
		if len(s.Mean) != s.Channels || len(s.Std) != s.Channels {
			return bad("mean %v and std %v for %d channels", s.Mean, s.Std, s.Channels)
		}
		if !finite(s.Mean...) || !finite(s.Std...) {
			return bad("mean %v and std %v must be finite", s.Mean, s.Std)
		}
		for _, v := range s.Std {
			if v <= 0 {
				return bad("std %v must be positive", s.Std)
			}
		}
	}
	return nil
}

func finite(v ...float64) bool {
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

// Marshal returns s as the JSON recorded under Key, after Validate.
func (s Spec) Marshal() (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// Parse reads the JSON recorded under Key (unknown fields are errors: a
// misspelt field would otherwise pass unseen) and validates it.
func Parse(v string) (Spec, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return Spec{}, fmt.Errorf("%w: not the JSON of a preprocessing record: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Spec{}, fmt.Errorf("%w: more than one JSON value", ErrInvalid)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// Unit reports whether s feeds v/255 unchanged: range [0, 1], no mean or
// standard deviation.
func (s Spec) Unit() bool {
	return len(s.Range) == 2 && s.Range[0] == 0 && s.Range[1] == 1 && s.Mean == nil
}

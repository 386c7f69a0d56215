// Package eval measures the quality of a frozen encoder's representations
// with the protocols of the DIM paper: classifiers trained on frozen
// features (linear, the paper's 200-unit MLP, kNN, linear SVM), and the
// dependency measures NDM and MINE. It also draws the pictures: a 2-D map
// of Y and nearest-neighbour grids.
package eval

import (
	"context"
	"fmt"
	"io"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
)

// Source computes features from a batch of images.
type Source interface {
	// Name describes the source ("checkpoint runs/x", "untrained basic28",
	// "raw pixels").
	Name() string
	// Features returns the requested taps for x as [N, D] float32 tensors,
	// called without gradients.
	Features(x *torch.Tensor, taps []string) (map[string]*torch.Tensor, error)
}

// EncoderSource reads features from an encoder in evaluation mode.
type EncoderSource struct {
	Enc  models.Encoder
	Desc string
}

// Name implements Source.
func (e EncoderSource) Name() string { return e.Desc }

// Features implements Source.
func (e EncoderSource) Features(x *torch.Tensor, taps []string) (map[string]*torch.Tensor, error) {
	if err := models.CheckInput(e.Enc, x); err != nil {
		return nil, err
	}
	return tapFeatures(e.Enc.Encode(x), taps)
}

// tapFeatures returns the named taps of t as [N, D] matrices.
func tapFeatures(t models.Taps, taps []string) (map[string]*torch.Tensor, error) {
	out := map[string]*torch.Tensor{}
	for _, name := range taps {
		v, err := t.Tap(name)
		if err != nil {
			return nil, err
		}
		out[name] = v.Flatten(1, -1)
	}
	return out, nil
}

// PixelSource uses the raw pixels (normalised to [-1, 1]) as the feature
// "pixels" for every requested tap.
type PixelSource struct{}

// Name implements Source.
func (PixelSource) Name() string { return "raw pixels" }

// Features implements Source.
func (PixelSource) Features(x *torch.Tensor, taps []string) (map[string]*torch.Tensor, error) {
	return map[string]*torch.Tensor{"pixels": x.Flatten(1, -1)}, nil
}

// Set holds extracted features and labels on the CPU, owned by the set.
type Set struct {
	Feats  map[string]*torch.Tensor // [N, D] float32 (bfloat16 with ExtractOptions.WideBFloat16)
	Labels *torch.Tensor            // [N] int64
	Images *torch.Tensor            // [N, C, H, W] float32 in [-1, 1], kept when requested (for pictures)
}

// Len is the number of images.
func (s *Set) Len() int { return int(s.Labels.Size(0)) }

// Free releases the tensors.
func (s *Set) Free() {
	for _, t := range s.Feats {
		t.Free()
	}
	s.Labels.Free()
	s.Images.Free()
}

// ExtractOptions say which features to extract and how to keep them.
type ExtractOptions struct {
	Transform  datasets.Transform // applied to each image (nil: none)
	Taps       []string           // conv, fc, y (or pixels, for PixelSource)
	KeepImages bool               // keep the images too (pictures, MINE, MS-SSIM)
	Device     torch.Device       // where the encoder runs
	// WideBFloat16 keeps features wider than WideDims in bfloat16 instead
	// of float32: half the memory, and the linear probe's products with them
	// run on the CPU's bfloat16 units. Narrower features (Y) stay float32.
	WideBFloat16 bool
}

// WideDims is the width above which ExtractOptions.WideBFloat16 applies.
const WideDims = 512

// eachBatch runs fn on every batch of one epoch of l, without gradients,
// each batch moved into a scope of its own that is closed when fn returns;
// it stops at the first error.
func eachBatch(ctx context.Context, l *datasets.Loader, fn func(b *datasets.Batch, s *torch.Scope) error) error {
	it := l.Epoch(ctx, 0)
	defer it.Close()
	var err error
	torch.NoGrad(func() {
		for err == nil {
			b, e := it.Next()
			if e == io.EOF {
				return
			}
			if e != nil {
				err = e
				return
			}
			s := torch.NewScope()
			b.MoveTo(s)
			err = fn(b, s)
			s.Close()
		}
	})
	return err
}

// ForEachBatch encodes every batch of one epoch of l (l.Epoch(ctx, 0), in
// the loader's order) with enc in evaluation mode and without gradients,
// and calls fn with the batch and its taps. layout, when not nil, is
// applied to each batch's images before enc sees them (a memory layout such
// as channels-last); the images enc receives are checked against its input
// shape first (models.CheckInput).
//
// Each batch is moved into a scope of its own that is closed when fn
// returns: the batch, its taps and whatever fn computes from them are freed
// then, so fn must copy out (or MoveTo(nil)) anything it keeps. ForEachBatch
// stops at the first error (of the loader, the input check or fn; ctx's
// when it is cancelled) and returns it. It leaves enc in the mode it found
// it in (training or evaluation), even on error.
func ForEachBatch(ctx context.Context, enc models.Encoder, l *datasets.Loader, layout func(*torch.Tensor) *torch.Tensor,
	fn func(b *datasets.Batch, taps models.Taps) error) error {
	defer enc.Train(enc.Training())
	enc.Train(false)
	return eachBatch(ctx, l, func(b *datasets.Batch, _ *torch.Scope) error {
		x := b.X
		if layout != nil {
			x = layout(x)
		}
		if err := models.CheckInput(enc, x); err != nil {
			return err
		}
		return fn(b, enc.Encode(x))
	})
}

// Extract runs every image of d through src once (no gradients, in order)
// and returns the features, on the CPU. Each feature is computed once and
// reused by every probe.
func Extract(ctx context.Context, src Source, d datasets.Dataset, o ExtractOptions) (*Set, error) {
	taps, keepImages := o.Taps, o.KeepImages
	l, err := datasets.NewLoader(d, datasets.LoaderOptions{BatchSize: 256, Workers: 2, Transform: o.Transform, Device: o.Device})
	if err != nil {
		return nil, err
	}
	// Each feature matrix is allocated once, at its final size, and filled
	// batch by batch: concatenating per-batch parts at the end needed twice
	// the matrix's memory at the peak (3 GB for 60,000 conv features).
	total := int64(d.Len())
	feats := map[string]*torch.Tensor{}
	var labels, images []*torch.Tensor
	free := func() {
		for _, f := range feats {
			f.Free()
		}
		for _, p := range append(labels, images...) {
			p.Free()
		}
	}
	var off int64
	store := func(b *datasets.Batch, fs map[string]*torch.Tensor, err error) error {
		if err != nil {
			return err
		}
		m := b.X.Size(0)
		for name, f := range fs {
			dst, ok := feats[name]
			if !ok {
				dt := torch.Float32
				if o.WideBFloat16 && f.Size(1) > WideDims {
					dt = torch.BFloat16
				}
				dst = torch.Empty([]int64{total, f.Size(1)}, dt)
				feats[name] = dst
			}
			if off+m > total || f.Size(1) != dst.Size(1) {
				return fmt.Errorf("features %s: batch of %d x %d does not fit the %v matrix at row %d", name, m, f.Size(1), dst.Shape(), off)
			}
			rows := dst.Narrow(0, off, m)
			err := rows.CopyFrom(f)
			rows.Free()
			if err != nil {
				return fmt.Errorf("features %s: %w", name, err)
			}
		}
		off += m
		labels = append(labels, b.Y.To(torch.CPU).MoveTo(nil))
		if keepImages {
			images = append(images, b.X.To(torch.CPU).MoveTo(nil))
		}
		return nil
	}
	var ferr error
	if enc := encoderOf(src); enc != nil {
		ferr = ForEachBatch(ctx, enc, l, nil, func(b *datasets.Batch, t models.Taps) error {
			fs, err := tapFeatures(t, taps)
			return store(b, fs, err)
		})
	} else {
		ferr = eachBatch(ctx, l, func(b *datasets.Batch, _ *torch.Scope) error {
			fs, err := src.Features(b.X, taps)
			return store(b, fs, err)
		})
	}
	if ferr == nil && off != total {
		ferr = fmt.Errorf("extracted %d of %d images", off, total)
	}
	if ferr != nil {
		free()
		return nil, ferr
	}
	set := &Set{Feats: feats}
	set.Labels = torch.Cat(labels, 0)
	if keepImages {
		set.Images = torch.Cat(images, 0)
	}
	for _, p := range append(labels, images...) {
		p.Free()
	}
	if err := set.Labels.Err(); err != nil {
		set.Free()
		return nil, err
	}
	return set, nil
}

// encoderOf returns the encoder of an EncoderSource (nil for any other
// source), whose features Extract reads with ForEachBatch.
func encoderOf(src Source) models.Encoder {
	switch s := src.(type) {
	case EncoderSource:
		return s.Enc
	case *EncoderSource:
		return s.Enc
	}
	return nil
}

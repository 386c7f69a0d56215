package datasets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/dimtorch/dimtorch/torch"
)

// LoaderOptions configure a Loader. Zero values give: batch size 64, no
// shuffling, one worker per CPU, prefetch of twice the workers, the last
// partial batch kept, no transform, one view, CPU tensors.
type LoaderOptions struct {
	BatchSize int
	Shuffle   bool
	Seed      uint64
	Workers   int
	Prefetch  int
	DropLast  bool
	Transform Transform
	// Views is the number of independently transformed copies of every
	// image in a batch (multi-view training). View 0 draws the same random
	// transforms as a one-view loader with the same seed.
	Views  int
	Device torch.Device
	// Rank and World shard every epoch for data-parallel training: the
	// epoch's order (the same permutation on every rank, from Seed and the
	// epoch) is cut to a multiple of World images and rank r reads positions
	// r, r+World, r+2*World, ... of it. The shards of one epoch are disjoint,
	// of equal size, and together cover all but at most World-1 images (a
	// different few each epoch when shuffling). Augmentations depend on the
	// image, the view and the epoch only, not on the rank. World 0 or 1: no
	// sharding.
	Rank, World int
}

// Loader turns a Dataset into batches of tensors: images as float32
// [N, C, H, W] in [-1, 1] and labels as int64 [N] (-1 when unlabeled).
// Worker goroutines decode, augment and convert images ahead of the
// consumer. The batches of an epoch depend only on the seed and the epoch
// number, never on the number of workers.
type Loader struct {
	ds    Dataset
	o     LoaderOptions
	shape Shape // of every transformed image
}

// NewLoader checks the options and the shape images have after the transform.
func NewLoader(ds Dataset, o LoaderOptions) (*Loader, error) {
	if o.BatchSize == 0 {
		o.BatchSize = 64
	}
	if o.BatchSize < 0 {
		return nil, fmt.Errorf("batch size %d must be positive", o.BatchSize)
	}
	if o.Views == 0 {
		o.Views = 1
	}
	if o.Views < 0 {
		return nil, fmt.Errorf("views %d must be positive", o.Views)
	}
	if o.World == 0 {
		o.World = 1
	}
	if o.World < 1 || o.Rank < 0 || o.Rank >= o.World {
		return nil, fmt.Errorf("rank %d of a world of %d: want 0 <= rank < world", o.Rank, o.World)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 2 * o.Workers
	}
	if ds.Len() == 0 {
		return nil, errors.New("the dataset is empty")
	}
	if ds.Len() < o.World {
		return nil, fmt.Errorf("%d images cannot be shared among %d processes", ds.Len(), o.World)
	}
	l := &Loader{ds: ds, o: o}
	img, _, err := ds.Image(0)
	if err != nil {
		return nil, err
	}
	if o.Transform != nil {
		img = o.Transform.Apply(img, rand.New(rand.NewPCG(0, 0)))
	}
	l.shape = Shape{img.C, img.H, img.W}
	if l.NumBatches() == 0 {
		return nil, fmt.Errorf("%d images make no full batch of %d (drop-last is on)", l.ShardLen(), o.BatchSize)
	}
	return l, nil
}

// Shape returns the shape of each image in a batch.
func (l *Loader) Shape() Shape { return l.shape }

// Len is the number of images in the dataset (all ranks').
func (l *Loader) Len() int { return l.ds.Len() }

// Dataset returns the dataset the loader reads.
func (l *Loader) Dataset() Dataset { return l.ds }

// ShardLen is the number of images this loader reads per epoch: the
// dataset's, or its rank's share when sharded.
func (l *Loader) ShardLen() int { return l.ds.Len() / l.o.World }

// NumBatches returns the number of batches per epoch (of this rank's shard).
func (l *Loader) NumBatches() int {
	n, b := l.ShardLen(), l.o.BatchSize
	if l.o.DropLast {
		return n / b
	}
	return (n + b - 1) / b
}

// Views returns the number of transformed copies of each image in a batch.
func (l *Loader) Views() int { return l.o.Views }

// Batch is one batch of tensors, owned by the caller: Free them, or move
// them into a step's scope.
type Batch struct {
	// X holds float32 images in [-1, 1], [V*N, C, H, W] for V views of N
	// images, view-major: rows v*N to (v+1)*N-1 are view v of the N images.
	X       *torch.Tensor
	Y       *torch.Tensor // int64 [N]
	Index   int           // position in the epoch
	Indices []int         // dataset indices of the images
}

// MoveTo moves both tensors into scope s.
func (b *Batch) MoveTo(s *torch.Scope) {
	b.X.MoveTo(s)
	b.Y.MoveTo(s)
}

// Free releases both tensors.
func (b *Batch) Free() {
	b.X.Free()
	b.Y.Free()
}

// Order returns the dataset indices of an epoch in the order they are served.
func (l *Loader) Order(epoch int) []int {
	n := l.ds.Len()
	var idx []int
	if !l.o.Shuffle {
		idx = make([]int, n)
		for i := range idx {
			idx[i] = i
		}
	} else {
		idx = rand.New(rand.NewPCG(l.o.Seed, 0x9e3779b97f4a7c15^uint64(epoch))).Perm(n)
	}
	if l.o.World <= 1 {
		return idx
	}
	shard := make([]int, 0, l.ShardLen())
	for i := l.o.Rank; i < l.ShardLen()*l.o.World; i += l.o.World {
		shard = append(shard, idx[i])
	}
	return shard
}

// imageRNG is the random source of one view of one image's augmentation in
// one epoch.
func imageRNG(seed uint64, epoch, index, view int) *rand.Rand {
	return rand.New(rand.NewPCG(seed^(uint64(epoch)*0xbf58476d1ce4e5b9), uint64(index)^(uint64(view)<<48)))
}

type result struct {
	b   *Batch
	err error
}

type job struct {
	index   int
	indices []int
	out     chan result
}

// Epoch starts producing the batches of one epoch. Read them with Next and
// call Close when done (also after an error or an early stop).
func (l *Loader) Epoch(ctx context.Context, epoch int) *EpochIter { return l.EpochFrom(ctx, epoch, 0) }

// EpochFrom is Epoch starting at batch start (skipping the earlier batches
// without loading them), for resuming mid-epoch: the batches are the same as
// those of a full epoch from that point on.
func (l *Loader) EpochFrom(ctx context.Context, epoch, start int) *EpochIter {
	ctx, cancel := context.WithCancel(ctx)
	start = max(0, min(start, l.NumBatches()))
	it := &EpochIter{order: make(chan chan result, l.o.Prefetch), cancel: cancel, ctx: ctx, want: l.NumBatches() - start,
		pool: newBatchPool(l.o, l.shape)}
	order := l.Order(epoch)
	jobs := make(chan job)
	it.wg.Add(1)
	go func() { // feeder: batches in order, at most Prefetch ahead
		defer it.wg.Done()
		defer close(jobs)
		defer close(it.order)
		for b := start; b < l.NumBatches(); b++ {
			lo, hi := b*l.o.BatchSize, min((b+1)*l.o.BatchSize, len(order))
			j := job{b, order[lo:hi], make(chan result, 1)}
			select {
			case it.order <- j.out:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- j:
			case <-ctx.Done():
				j.out <- result{err: ctx.Err()}
				return
			}
		}
	}()
	for w := 0; w < l.o.Workers; w++ {
		it.wg.Add(1)
		go func() {
			defer it.wg.Done()
			for j := range jobs {
				b, err := l.build(epoch, j.index, j.indices, it.pool)
				j.out <- result{b, err}
			}
		}()
	}
	return it
}

// build assembles one batch.
func (l *Loader) build(epoch, index int, indices []int, pool *torch.HostPool[float32]) (*Batch, error) {
	imgs := make([]Image, len(indices))
	labels := make([]int, len(indices))
	for k, i := range indices {
		var err error
		if imgs[k], labels[k], err = l.ds.Image(i); err != nil {
			return nil, err
		}
	}
	return assemble(l.o, l.shape, epoch, index, imgs, labels, indices, pool)
}

// assemble stacks images with their labels and dataset numbers into a
// batch: o.Views copies of each, transformed with the image's own random
// source for the epoch and the view, normalised to [-1, 1], every one of
// shape s. The images are written straight into a tensor from pool.
func assemble(o LoaderOptions, s Shape, epoch, index int, imgs []Image, labels, ids []int, pool *torch.HostPool[float32]) (*Batch, error) {
	per := s.C * s.H * s.W
	nv := len(imgs)
	n := int64(o.Views * nv)
	x, xs, err := pool.Get([]int64{n, int64(s.C), int64(s.H), int64(s.W)})
	if err != nil {
		return nil, err
	}
	ys := make([]int64, nv)
	for k, orig := range imgs {
		for v := 0; v < o.Views; v++ {
			img := orig
			if o.Transform != nil {
				img = o.Transform.Apply(orig, imageRNG(o.Seed, epoch, ids[k], v))
			}
			if img.C != s.C || img.H != s.H || img.W != s.W {
				x.Free()
				return nil, fmt.Errorf("image %d is %dx%dx%d after the transform, not %v like the first: add a Resize or crop to a fixed size", ids[k], img.C, img.H, img.W, s)
			}
			row := v*nv + k
			Normalize(img, xs[row*per:(row+1)*per])
		}
		ys[k] = int64(labels[k])
	}
	if o.Device.Type != torch.CPUDevice {
		host := x
		x = host.To(o.Device)
		host.Free()
	}
	y := torch.FromSlice(ys, []int64{int64(nv)}, o.Device)
	if err := firstError(x, y); err != nil {
		x.Free()
		y.Free()
		return nil, err
	}
	return &Batch{X: x, Y: y, Index: index, Indices: append([]int(nil), ids...)}, nil
}

func firstError(ts ...*torch.Tensor) error {
	for _, t := range ts {
		if err := t.Err(); err != nil {
			return err
		}
	}
	return nil
}

// EpochIter yields the batches of one epoch in order.
type EpochIter struct {
	order  chan chan result
	ctx    context.Context
	want   int // batches in the epoch
	got    int // batches delivered
	cancel context.CancelFunc
	wg     sync.WaitGroup
	err    error
	pool   *torch.HostPool[float32] // the batches' memory, reused
}

// Next returns the next batch, io.EOF after the last one, or the first error
// (an unreadable image, a cancelled context).
func (it *EpochIter) Next() (*Batch, error) {
	if it.err != nil {
		return nil, it.err
	}
	ch, ok := <-it.order
	if !ok {
		it.err = io.EOF
		if it.got < it.want {
			// The feeder stopped early: the context was cancelled.
			it.err = it.ctx.Err()
		}
		return nil, it.err
	}
	r := <-ch
	if r.err != nil {
		it.err = r.err
		return nil, r.err
	}
	it.got++
	return r.b, nil
}

// Close stops the workers, frees batches produced but not taken and the
// pool's references to batch memory (batches taken stay valid). Every
// result channel in the queue holds exactly one result once the goroutines
// have finished (workers send to buffered channels; the feeder answers a job
// it could not hand out with the context's error), so the drain never blocks.
func (it *EpochIter) Close() {
	it.cancel()
	it.wg.Wait()
	for ch := range it.order {
		if r := <-ch; r.b != nil {
			r.b.Free()
		}
	}
	it.pool.Close()
}

// newBatchPool returns the pool of an epoch's batch tensors: as many as
// may be alive at once (those queued, those being built, and two held by
// the consumer), each of a full batch's shape.
func newBatchPool(o LoaderOptions, s Shape) *torch.HostPool[float32] {
	shape := []int64{int64(o.Views * o.BatchSize), int64(s.C), int64(s.H), int64(s.W)}
	return torch.NewHostPool[float32](shape, o.Prefetch+o.Workers+2)
}

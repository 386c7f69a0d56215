package datasets

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dimtorch/dimtorch/torch"
)

// ShardSet is a directory of shards with its manifest.
type ShardSet struct {
	Dir      string
	Manifest ShardManifest
	first    []int // the global number of each shard's first sample
}

// OpenShards reads dir's manifest and checks that its shards are there.
func OpenShards(dir string) (*ShardSet, error) {
	m, err := ReadShardManifest(dir)
	if err != nil {
		return nil, err
	}
	s := &ShardSet{Dir: dir, Manifest: m}
	n := 0
	for _, e := range m.Shards {
		s.first = append(s.first, n)
		n += e.Samples
	}
	return s, nil
}

// Len is the number of samples in all shards.
func (s *ShardSet) Len() int { return s.Manifest.Samples }

// ShardLoaderOptions configure a ShardLoader: LoaderOptions' batches,
// shuffling, workers, transform, views and ranks, and the shuffle buffer.
type ShardLoaderOptions struct {
	LoaderOptions
	// Buffer is the shuffle buffer's samples (default 1000): how far apart
	// in the shards two samples of one batch may be, and how many samples
	// are held in memory, undecoded.
	Buffer int
	// SkipCorrupt drops a sample whose image does not decode, and the rest
	// of a shard whose tar is damaged, from its batch (the batch is then
	// smaller), telling OnCorrupt; without it they are errors.
	SkipCorrupt bool
	// OnCorrupt is told of each sample skipped; the loader's workers call
	// it one at a time, so it needs no lock of its own.
	OnCorrupt func(error)
	// DecodeSide is the least side a JPEG is decoded to, at the smallest
	// of libjpeg-turbo's scales that keeps it (0: 128, twice the 64 that
	// training brings shards to; -1: full size).
	DecodeSide int
}

// ShardLoader turns shards into batches as Loader turns a Dataset into
// them, reading each shard from start to end. An epoch's order: the shards
// in an order drawn from the seed and the epoch (or as listed, without
// shuffling), dealt to the ranks in turn (rank r takes shards r, r+World,
// ...), read one after another, and passed through a shuffle buffer (each
// sample read replaces one drawn at random from the buffer, which is
// emptied in random order at the end). The order is computed from the
// manifest's counts alone, so an epoch's batches depend only on the seed,
// the epoch and the rank (not on the workers, which decode and augment in
// parallel), and an epoch resumed at batch k gives the same batches as a
// full one from k: the shards are read again from the rank's first, the
// samples served before k skipped undecoded.
//
// With several ranks every rank serves the same number of batches: those
// its fewest samples fill, the sum of the ⌊shards/World⌋ smallest shards
// (the samples beyond it, a different few each epoch, wait for a later
// epoch). Write more shards than ranks.
type ShardLoader struct {
	set      *ShardSet
	o        ShardLoaderOptions
	shape    Shape // of every transformed image
	channels int   // of the decoded images
	perRank  int   // samples a rank serves an epoch
	skipped  atomic.Int64
	// corruptMu serialises the calls to OnCorrupt from the workers.
	corruptMu sync.Mutex
}

// NewShardLoader checks the options against the shards and reads the
// first sample for the images' shape.
func NewShardLoader(set *ShardSet, o ShardLoaderOptions) (*ShardLoader, error) {
	lo := o.LoaderOptions
	if lo.BatchSize == 0 {
		lo.BatchSize = 64
	}
	if lo.Views == 0 {
		lo.Views = 1
	}
	if lo.World == 0 {
		lo.World = 1
	}
	if lo.Workers <= 0 {
		lo.Workers = max(1, min(8, runtime.NumCPU()))
	}
	if lo.Prefetch <= 0 {
		lo.Prefetch = 2 * lo.Workers
	}
	if o.Buffer == 0 {
		o.Buffer = 1000
	}
	switch {
	case lo.BatchSize < 0 || lo.Views < 0 || o.Buffer < 1:
		return nil, fmt.Errorf("batch size %d, views %d, shuffle buffer %d: want positive values", lo.BatchSize, lo.Views, o.Buffer)
	case lo.World < 1 || lo.Rank < 0 || lo.Rank >= lo.World:
		return nil, fmt.Errorf("rank %d of a world of %d: want 0 <= rank < world", lo.Rank, lo.World)
	case len(set.Manifest.Shards) < lo.World:
		return nil, fmt.Errorf("shards %s: %d shards cannot be dealt to %d processes: write smaller shards (dimtorch data shard --shard-size)",
			set.Dir, len(set.Manifest.Shards), lo.World)
	}
	o.LoaderOptions = lo
	l := &ShardLoader{set: set, o: o}
	counts := make([]int, len(set.Manifest.Shards))
	for i, e := range set.Manifest.Shards {
		counts[i] = e.Samples
	}
	slices.Sort(counts)
	for _, c := range counts[:len(counts)/lo.World] {
		l.perRank += c
	}
	img, err := set.FirstImage()
	if err != nil {
		return nil, err
	}
	l.channels = img.C
	if lo.Transform != nil {
		img = lo.Transform.Apply(img, rand.New(rand.NewPCG(0, 0)))
	}
	l.shape = Shape{img.C, img.H, img.W}
	if l.NumBatches() == 0 {
		return nil, fmt.Errorf("shards %s: %d samples a rank make no full batch of %d", set.Dir, l.perRank, lo.BatchSize)
	}
	return l, nil
}

// FirstImage decodes the first shard's first sample: the shards' images
// have its channels (1 when it is grayscale, else 3, unless the manifest
// records them).
func (s *ShardSet) FirstImage() (Image, error) {
	name := s.Manifest.Shards[0].Name
	f, err := os.Open(filepath.Join(s.Dir, name))
	if err != nil {
		return Image{}, err
	}
	defer f.Close()
	first, err := NewShardReader(name, f).Next()
	if err != nil {
		return Image{}, err
	}
	channels := 3
	if sh := s.Manifest.Shape; sh != nil {
		channels = sh.C
	} else {
		for _, ext := range []string{"jpg", "jpeg", "png"} {
			if b, ok := first.Field(ext); ok {
				if cfg, _, err := image.DecodeConfig(bytes.NewReader(b)); err == nil && isGray(cfg.ColorModel) {
					channels = 1
				}
				break
			}
		}
	}
	img, _, err := ShardImage(first, channels)
	return img, err
}

// Shape returns the shape of each image in a batch.
func (l *ShardLoader) Shape() Shape { return l.shape }

// Len is the number of samples in all shards.
func (l *ShardLoader) Len() int { return l.set.Len() }

// Views returns the number of transformed copies of each image in a batch.
func (l *ShardLoader) Views() int { return l.o.Views }

func (l *ShardLoader) decodeSide() int {
	switch {
	case l.o.DecodeSide < 0:
		return 0
	case l.o.DecodeSide == 0:
		return reducedSide
	}
	return l.o.DecodeSide
}

// Classes are the manifest's.
func (l *ShardLoader) Classes() []string { return l.set.Manifest.Classes }

// NumBatches is the batches of an epoch, the same on every rank.
func (l *ShardLoader) NumBatches() int {
	n, b := l.perRank, l.o.BatchSize
	if l.o.DropLast || l.o.World > 1 {
		return n / b
	}
	return (n + b - 1) / b
}

// Skipped is the samples dropped so far (SkipCorrupt).
func (l *ShardLoader) Skipped() int { return int(l.skipped.Load()) }

// sampleRef is one sample of an epoch's reading order.
type sampleRef struct {
	shard, pos int // in the manifest's list, in the shard
}

// plan is an epoch's order for this rank: the samples in the order they
// are read, and the positions in that order in which they are served
// (NumBatches full batches, the last partial one without DropLast).
func (l *ShardLoader) plan(epoch int) (read []sampleRef, served []int) {
	shards := make([]int, len(l.set.Manifest.Shards))
	for i := range shards {
		shards[i] = i
	}
	if l.o.Shuffle {
		shards = rand.New(rand.NewPCG(l.o.Seed, 0x5bd1e995^uint64(epoch))).Perm(len(shards))
	}
	for i := l.o.Rank; i < len(shards); i += l.o.World {
		s := shards[i]
		for p := range l.set.Manifest.Shards[s].Samples {
			read = append(read, sampleRef{s, p})
		}
	}
	served = make([]int, 0, len(read))
	if !l.o.Shuffle || l.o.Buffer == 1 {
		for i := range read {
			served = append(served, i)
		}
	} else {
		rng := rand.New(rand.NewPCG(l.o.Seed^0x2545f4914f6cdd1d, uint64(epoch)<<16|uint64(l.o.Rank)))
		buf := make([]int, 0, l.o.Buffer)
		for i := range read {
			if len(buf) < l.o.Buffer {
				buf = append(buf, i)
				continue
			}
			j := rng.IntN(len(buf))
			served = append(served, buf[j])
			buf[j] = i
		}
		rng.Shuffle(len(buf), func(a, b int) { buf[a], buf[b] = buf[b], buf[a] })
		served = append(served, buf...)
	}
	return read, served[:min(len(served), l.NumBatches()*l.o.BatchSize)]
}

// rawSample is a sample read for a batch, or why it could not be.
type rawSample struct {
	id  int // global number
	s   ShardSample
	err error
}

// Epoch starts an epoch's batches; EpochFrom starts at batch start.
func (l *ShardLoader) Epoch(ctx context.Context, epoch int) *EpochIter {
	return l.EpochFrom(ctx, epoch, 0)
}

// EpochFrom is Epoch from batch start (resuming mid-epoch).
func (l *ShardLoader) EpochFrom(ctx context.Context, epoch, start int) *EpochIter {
	ctx, cancel := context.WithCancel(ctx)
	nb := l.NumBatches()
	start = max(0, min(start, nb))
	it := &EpochIter{order: make(chan chan result, l.o.Prefetch), cancel: cancel, ctx: ctx, want: nb - start,
		pool: newBatchPool(l.o.LoaderOptions, l.shape)}
	read, served := l.plan(epoch)
	batchOf := make([]int, len(read)) // the batch that serves each read position (-1: none)
	for i := range batchOf {
		batchOf[i] = -1
	}
	for k, p := range served {
		batchOf[p] = k / l.o.BatchSize
	}
	type rawJob struct {
		index   int
		samples []rawSample
		out     chan result
	}
	jobs := make(chan rawJob)
	it.wg.Add(1)
	go func() { // the reader: the rank's shards from the start, batches in order
		defer it.wg.Done()
		defer close(jobs)
		defer close(it.order)
		r := &seqReader{set: l.set, read: read}
		defer r.close()
		held := map[int]rawSample{} // read, not yet served
		next := 0                   // the next read position
		for b := start; b < nb; b++ {
			pos := served[b*l.o.BatchSize : min((b+1)*l.o.BatchSize, len(served))]
			last := slices.Max(pos)
			for ; next <= last; next++ {
				s, err := r.next(next)
				if batchOf[next] >= start {
					held[next] = rawSample{id: l.set.first[read[next].shard] + read[next].pos, s: s, err: err}
				}
			}
			j := rawJob{b, make([]rawSample, len(pos)), make(chan result, 1)}
			for i, p := range pos {
				j.samples[i] = held[p]
				delete(held, p)
			}
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
	for range l.o.Workers {
		it.wg.Add(1)
		go func() {
			defer it.wg.Done()
			for j := range jobs {
				b, err := l.build(epoch, j.index, j.samples, it.pool)
				j.out <- result{b, err}
			}
		}()
	}
	return it
}

// build decodes, augments and stacks one batch's samples.
func (l *ShardLoader) build(epoch, index int, samples []rawSample, pool *torch.HostPool[float32]) (*Batch, error) {
	imgs := make([]Image, 0, len(samples))
	labels := make([]int, 0, len(samples))
	ids := make([]int, 0, len(samples))
	for _, r := range samples {
		err := r.err
		var img Image
		var label int
		if err == nil {
			img, label, err = ShardImageAt(r.s, l.channels, l.decodeSide())
		}
		if err != nil {
			if !l.o.SkipCorrupt {
				return nil, err
			}
			l.skipped.Add(1)
			if l.o.OnCorrupt != nil {
				l.corruptMu.Lock()
				l.o.OnCorrupt(err)
				l.corruptMu.Unlock()
			}
			continue
		}
		imgs, labels, ids = append(imgs, img), append(labels, label), append(ids, r.id)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("shards %s: every sample of batch %d is unreadable", l.set.Dir, index)
	}
	return assemble(l.o.LoaderOptions, l.shape, epoch, index, imgs, labels, ids, pool)
}

// seqReader reads an epoch's samples in their reading order, one shard
// after another. A shard that ends early or breaks makes its remaining
// samples errors (served as such: skipped or failing their batch).
type seqReader struct {
	set    *ShardSet
	read   []sampleRef
	f      *os.File
	r      *ShardReader
	shard  int   // open shard (-1: none)
	broken error // why the open shard's remaining samples are missing
}

func (q *seqReader) next(i int) (ShardSample, error) {
	ref := q.read[i]
	if q.r == nil || ref.shard != q.shard || ref.pos == 0 {
		q.close()
		e := q.set.Manifest.Shards[ref.shard]
		q.shard, q.broken = ref.shard, nil
		f, err := os.Open(filepath.Join(q.set.Dir, e.Name))
		if err != nil {
			q.broken = err
		} else {
			q.f, q.r = f, NewShardReader(e.Name, f)
		}
	}
	if q.broken != nil {
		return ShardSample{}, q.broken
	}
	s, err := q.r.Next()
	if err == io.EOF {
		e := q.set.Manifest.Shards[ref.shard]
		err = fmt.Errorf("shard %s: ended after %d samples, the manifest says %d", e.Name, ref.pos, e.Samples)
	}
	if err != nil {
		q.broken = err
		return ShardSample{}, err
	}
	return s, nil
}

func (q *seqReader) close() {
	if q.f != nil {
		q.f.Close()
		q.f, q.r = nil, nil
	}
}

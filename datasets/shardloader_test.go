package datasets

import (
	"context"
	"fmt"
	"image/jpeg"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dimtorch/dimtorch/torch"
)

// shardedSynthetic writes n 6x6 grayscale images (image i: random pixels
// from i, label i%10) as shards of about 8 KB and opens them.
func shardedSynthetic(t *testing.T, n int) (*ShardSet, *memory) {
	t.Helper()
	s := Shape{1, 6, 6}
	m := &memory{shape: s, classes: mnistClasses, pix: make([]uint8, n*36), labels: make([]int, n)}
	r := rand.New(rand.NewPCG(9, 9))
	for i := range n {
		for p := range 36 {
			m.pix[i*36+p] = uint8(r.Uint32())
		}
		m.labels[i] = i % 10
	}
	dir := t.TempDir()
	if _, err := ShardsFromDataset(context.Background(), m, ShardWriterOptions{Dir: dir, MaxBytes: 8 << 10}); err != nil {
		t.Fatal(err)
	}
	set, err := OpenShards(dir)
	if err != nil {
		t.Fatal(err)
	}
	return set, m
}

type shardBatch struct {
	x   []float32
	y   []int64
	ids []int
}

func collectShards(t *testing.T, l *ShardLoader, epoch, start int) []shardBatch {
	t.Helper()
	it := l.EpochFrom(context.Background(), epoch, start)
	defer it.Close()
	var out []shardBatch
	for {
		b, err := it.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		x, _ := torch.Data[float32](b.X)
		y, _ := torch.Data[int64](b.Y)
		out = append(out, shardBatch{x, y, b.Indices})
		b.Free()
	}
}

func newShardLoader(t *testing.T, set *ShardSet, o ShardLoaderOptions) *ShardLoader {
	t.Helper()
	l, err := NewShardLoader(set, o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Without shuffling, one rank reads every sample in the shards' order, the
// images and labels those written.
func TestShardLoaderReadsEverySample(t *testing.T) {
	set, m := shardedSynthetic(t, 300)
	if len(set.Manifest.Shards) < 5 {
		t.Fatalf("%d shards", len(set.Manifest.Shards))
	}
	l := newShardLoader(t, set, ShardLoaderOptions{LoaderOptions: LoaderOptions{BatchSize: 32, Workers: 3}})
	if l.NumBatches() != 10 || l.Shape() != (Shape{1, 6, 6}) || l.Len() != 300 {
		t.Fatalf("%d batches of %v over %d", l.NumBatches(), l.Shape(), l.Len())
	}
	next := 0
	for _, b := range collectShards(t, l, 0, 0) {
		for k, id := range b.ids {
			if id != next {
				t.Fatalf("sample %d served as %d", next, id)
			}
			img, label, _ := m.Image(id)
			want := make([]float32, 36)
			Normalize(img, want)
			if fmt.Sprint(b.x[k*36:(k+1)*36]) != fmt.Sprint(want) || b.y[k] != int64(label) {
				t.Fatalf("sample %d: pixels or label (%d, want %d) differ", id, b.y[k], label)
			}
			next++
		}
	}
	if next != 300 {
		t.Fatalf("%d samples served", next)
	}
}

// Shuffled and dealt to ranks: every rank serves the same number of
// batches, the ranks' samples are disjoint, an epoch's order depends on
// the seed and the epoch only (not on the workers), epochs differ, and the
// shuffle buffer bounds how far a sample travels from where it is read.
func TestShardLoaderRanksAndShuffle(t *testing.T) {
	set, _ := shardedSynthetic(t, 500)
	tf := Compose(RandomCrop(6, 6, 1), HorizontalFlip(0.5))
	for _, world := range []int{1, 2, 3} {
		seen := map[int]int{}
		var batches []int
		for rank := range world {
			o := ShardLoaderOptions{LoaderOptions: LoaderOptions{BatchSize: 16, Shuffle: true, Seed: 7, Workers: 1, Transform: tf, Rank: rank, World: world}, Buffer: 40}
			l := newShardLoader(t, set, o)
			a := collectShards(t, l, 2, 0)
			o.Workers = 4
			b := collectShards(t, newShardLoader(t, set, o), 2, 0)
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("world %d rank %d: 1 and 4 workers serve different batches", world, rank)
			}
			if fmt.Sprint(collectShards(t, l, 3, 0)) == fmt.Sprint(a) {
				t.Fatalf("world %d rank %d: epochs 2 and 3 are the same", world, rank)
			}
			batches = append(batches, len(a))
			for _, bt := range a {
				for _, id := range bt.ids {
					seen[id]++
				}
			}
			read, served := l.plan(2)
			for k, p := range served {
				if p-k > o.Buffer {
					t.Fatalf("served %d-th a sample read %d-th: beyond the buffer of %d", k, p, o.Buffer)
				}
			}
			if len(read) < len(served) {
				t.Fatalf("%d read, %d served", len(read), len(served))
			}
		}
		for id, n := range seen {
			if n != 1 || id < 0 || id >= 500 {
				t.Fatalf("world %d: sample %d served %d times", world, id, n)
			}
		}
		for _, n := range batches {
			if n != batches[0] || n == 0 {
				t.Fatalf("world %d: ranks serve %v batches", world, batches)
			}
		}
		if world == 1 && len(seen) != 500-500%16 && len(seen) != 500 {
			t.Fatalf("one rank served %d of 500", len(seen))
		}
	}
	if _, err := NewShardLoader(set, ShardLoaderOptions{LoaderOptions: LoaderOptions{World: 100000}}); err == nil || !strings.Contains(err.Error(), "cannot be dealt to 100000 processes") {
		t.Fatalf("more ranks than shards: %v", err)
	}
}

// An epoch resumed at batch k serves exactly the batches of a full epoch
// from k, augmentations included.
func TestShardLoaderResumesExactly(t *testing.T) {
	set, _ := shardedSynthetic(t, 400)
	o := ShardLoaderOptions{LoaderOptions: LoaderOptions{BatchSize: 20, Shuffle: true, Seed: 3, Workers: 2, DropLast: true,
		Transform: Compose(RandomCrop(6, 6, 1), HorizontalFlip(0.5)), Views: 2, Rank: 1, World: 2}, Buffer: 64}
	l := newShardLoader(t, set, o)
	full := collectShards(t, l, 5, 0)
	for _, k := range []int{1, 4, len(full) - 1, len(full)} {
		rest := collectShards(t, l, 5, k)
		if fmt.Sprint(rest) != fmt.Sprint(full[k:]) {
			t.Fatalf("resumed at batch %d: %d batches, not the full epoch's last %d", k, len(rest), len(full)-k)
		}
	}
}

// A sample whose image does not decode, or a shard that breaks while
// being read, fails its batch with the shard and byte named; with
// SkipCorrupt the samples are counted and left out.
func TestShardLoaderCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := randomSamples(60, 5)
	m, err := WriteShards(context.Background(), 60, func(i int) (ShardSample, error) {
		s := ShardSample{Key: fmt.Sprintf("%04d", i)}
		img := NewImage(1, 4, 4)
		for p := range img.Pix {
			img.Pix[p] = uint8(i + p)
		}
		data := pngBytes(t, img)
		if i == 17 {
			data = good[i].Fields[0].Data // not an image
		}
		s.Fields = []ShardField{{"png", data}, {"cls", []byte("1")}}
		return s, nil
	}, ShardWriterOptions{Dir: dir, MaxBytes: 20 << 10})
	if err != nil {
		t.Fatal(err)
	}
	set, err := OpenShards(dir)
	if err != nil {
		t.Fatal(err)
	}
	o := ShardLoaderOptions{LoaderOptions: LoaderOptions{BatchSize: 10, Workers: 2}}
	l := newShardLoader(t, set, o)
	it := l.Epoch(context.Background(), 0)
	var failed error
	for {
		b, err := it.Next()
		if err != nil {
			if err != io.EOF {
				failed = err
			}
			break
		}
		b.Free()
	}
	it.Close()
	if failed == nil || !strings.Contains(failed.Error(), "sample 0017") || !strings.Contains(failed.Error(), "shard train-00000") {
		t.Fatalf("an undecodable image: %v", failed)
	}
	var told []error
	o.SkipCorrupt, o.OnCorrupt = true, func(err error) { told = append(told, err) }
	l = newShardLoader(t, set, o)
	n := 0
	for _, b := range collectShards(t, l, 0, 0) {
		n += len(b.ids)
	}
	if n != 59 || l.Skipped() != 1 || len(told) != 1 {
		t.Fatalf("skipping: %d served, %d skipped, told %v", n, l.Skipped(), told)
	}
	// A shard cut short after the manifest was read: its later samples fail.
	last := m.Shards[0]
	p := filepath.Join(dir, last.Name)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:len(b)/2], 0o644)
	told = nil
	n = 0
	for _, b := range collectShards(t, l, 0, 0) {
		n += len(b.ids)
	}
	if n >= 59 || len(told) < 2 || !strings.Contains(fmt.Sprint(told), last.Name+": truncated") {
		t.Fatalf("a truncated shard: %d served, told %v", n, told)
	}
	l = newShardLoader(t, set, ShardLoaderOptions{LoaderOptions: LoaderOptions{BatchSize: 10, Workers: 2}})
	it = l.Epoch(context.Background(), 0)
	defer it.Close()
	for {
		b, err := it.Next()
		if err == io.EOF {
			t.Fatal("a truncated shard read to the end without an error")
		}
		if err != nil {
			if !strings.Contains(err.Error(), last.Name) {
				t.Fatalf("the error does not name the shard: %v", err)
			}
			break
		}
		b.Free()
	}
}

func pngBytes(t *testing.T, img Image) []byte {
	t.Helper()
	var b strings.Builder
	if err := png.Encode(&b, img.ToGoImage()); err != nil {
		t.Fatal(err)
	}
	return []byte(b.String())
}

// shards:DIR opens as a random-access dataset: the training split from DIR,
// the test split from DIR/test, every image and label as written.
func TestShardDataset(t *testing.T) {
	set, m := shardedSynthetic(t, 120)
	test := filepath.Join(set.Dir, "test")
	if _, err := ShardsFromDataset(context.Background(), Subset(m, 30), ShardWriterOptions{Dir: test, Prefix: "test"}); err != nil {
		t.Fatal(err)
	}
	splits, err := Splits(ShardsPrefix+set.Dir, "")
	if err != nil || fmt.Sprint(splits) != "[train test]" {
		t.Fatalf("splits %v %v", splits, err)
	}
	for split, n := range map[Split]int{Train: 120, Test: 30} {
		d, err := Open(ShardsPrefix+set.Dir, split, "")
		if err != nil {
			t.Fatal(err)
		}
		if d.Len() != n || d.Shape() != m.shape || len(d.Classes()) != 10 {
			t.Fatalf("%s: %d images of %v, %d classes", split, d.Len(), d.Shape(), len(d.Classes()))
		}
		for _, i := range []int{0, n / 2, n - 1} {
			img, label, err := d.Image(i)
			want, wl, _ := m.Image(i)
			if err != nil || label != wl || fmt.Sprint(img.Pix) != fmt.Sprint(want.Pix) {
				t.Fatalf("%s image %d: label %d (want %d), %v", split, i, label, wl, err)
			}
		}
		Close(d)
	}
	// A shard whose samples are not the manifest's count.
	b, _ := os.ReadFile(filepath.Join(test, ShardManifestName))
	os.WriteFile(filepath.Join(test, ShardManifestName), []byte(strings.Replace(string(b), `"samples": 30,`, `"samples": 31,`, 2)), 0o644)
	if _, err := Open(ShardsPrefix+set.Dir, Test, ""); err == nil {
		t.Fatal("a manifest that miscounts opened")
	}
	if _, err := Open(ShardsPrefix+filepath.Join(set.Dir, "missing"), Train, ""); err == nil || !strings.Contains(err.Error(), "dimtorch data shard writes it") {
		t.Fatalf("missing shards: %v", err)
	}
}

// Large JPEGs of folders and shards decode at libjpeg-turbo's smallest
// fast scale that keeps both sides at least twice the 64 pixels they are
// brought to (512x384: 1/2, 256x192); PNGs at full size.
func TestLargeJPEGsDecodeReduced(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "a"), 0o755)
	img := NewImage(3, 384, 512)
	for i := range img.Pix {
		img.Pix[i] = uint8(i / 7)
	}
	var b strings.Builder
	if err := jpeg.Encode(&b, img.ToGoImage(), nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "a", "big.jpg"), []byte(b.String()), 0o644)
	os.WriteFile(filepath.Join(root, "a", "big.png"), pngBytes(t, img), 0o644)
	ds, err := OpenFolder(root, Train)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := ShardsFromDataset(context.Background(), ds, ShardWriterOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	sd, err := Open(ShardsPrefix+dir, Train, "")
	if err != nil {
		t.Fatal(err)
	}
	defer Close(sd)
	for _, d := range []Dataset{ds, sd} {
		if d.Shape() != (Shape{3, 384, 512}) {
			t.Fatalf("shape %v", d.Shape())
		}
		for i, want := range []Shape{{3, 192, 256}, {3, 384, 512}} { // big.jpg, big.png
			got, _, err := d.Image(i)
			if err != nil || (Shape{got.C, got.H, got.W}) != want {
				t.Fatalf("image %d: %dx%dx%d, want %v (%v)", i, got.C, got.H, got.W, want, err)
			}
		}
	}
}

// Whole epochs, resumed ones and one closed after its first batch leave no
// tensor alive: batches made ahead are freed by Close.
func TestShardLoaderFreesBatches(t *testing.T) {
	set, _ := shardedSynthetic(t, 300)
	before := torch.LiveTensors()
	l := newShardLoader(t, set, ShardLoaderOptions{LoaderOptions: LoaderOptions{BatchSize: 10, Shuffle: true, Workers: 3, Prefetch: 8}, Buffer: 30})
	for epoch := range 3 {
		collectShards(t, l, epoch, epoch)
	}
	it := l.Epoch(context.Background(), 0)
	b, err := it.Next()
	if err != nil {
		t.Fatal(err)
	}
	b.Free()
	time.Sleep(20 * time.Millisecond) // let the workers fill the prefetch queue
	it.Close()
	if live := torch.LiveTensors() - before; live != 0 {
		t.Fatalf("%d tensors alive after the epochs", live)
	}
}

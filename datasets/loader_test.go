package datasets

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"archive/tar"
	"bytes"
	"compress/gzip"

	"github.com/dimtorch/dimtorch/torch"
)

// synthetic returns an in-memory dataset of n images where every pixel of
// image i is i mod 256 and its label is i mod 10.
func synthetic(n int, s Shape) Dataset {
	per := s.C * s.H * s.W
	m := &memory{shape: s, classes: mnistClasses}
	m.pix = make([]uint8, n*per)
	m.labels = make([]int, n)
	for i := 0; i < n; i++ {
		for p := 0; p < per; p++ {
			m.pix[i*per+p] = uint8(i)
		}
		m.labels[i] = i % 10
	}
	return m
}

func ramp(c, h, w int) Image {
	img := NewImage(c, h, w)
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	return img
}

func TestTransforms(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	img := ramp(2, 6, 8)
	// Pad then crop back at the offset restores the image.
	p := pad(img, 2, false)
	if p.H != 10 || p.W != 12 || p.At(1, 0, 0) != 0 || p.At(1, 2, 2) != img.At(1, 0, 0) {
		t.Fatalf("pad: %dx%d", p.H, p.W)
	}
	if c := crop(p, 2, 2, 6, 8); !bytes.Equal(c.Pix, img.Pix) {
		t.Fatal("crop(pad(x)) != x")
	}
	// Reflect padding mirrors without repeating the edge.
	r := pad(img, 1, true)
	if r.At(0, 0, 0) != img.At(0, 1, 1) || r.At(0, 1, 0) != img.At(0, 0, 1) {
		t.Fatal("reflect padding")
	}
	// Flipping twice is the identity; once mirrors.
	f := flip(img)
	if f.At(0, 3, 0) != img.At(0, 3, 7) || !bytes.Equal(flip(f).Pix, img.Pix) {
		t.Fatal("flip")
	}
	// Random crops are windows of the padded image.
	for i := 0; i < 20; i++ {
		c := RandomCrop(6, 8, 2).Apply(img, rng)
		if c.H != 6 || c.W != 8 || c.C != 2 {
			t.Fatalf("random crop shape %dx%d", c.H, c.W)
		}
	}
	// Resizing to the same size is the identity; a constant image stays constant.
	if !bytes.Equal(resize(img, 6, 8).Pix, img.Pix) {
		t.Fatal("resize to the same size changed the image")
	}
	k := NewImage(3, 5, 7)
	for i := range k.Pix {
		k.Pix[i] = 77
	}
	for _, tr := range []Transform{Resize(13, 4), RandomResizedCrop(9, 9, 0.2, 1), CenterCrop(3, 3)} {
		out := tr.Apply(k, rng)
		for _, v := range out.Pix {
			if v != 77 {
				t.Fatalf("%s changed a constant image", tr)
			}
		}
	}
	// Downscaling 2x averages pairs of pixels (bilinear with centred samples).
	two := Image{C: 1, H: 1, W: 4, Pix: []uint8{10, 20, 30, 50}}
	if got := resize(two, 1, 2).Pix; got[0] != 15 || got[1] != 40 {
		t.Fatalf("2x downscale %v", got)
	}
	// CenterCrop takes the middle.
	if cc := CenterCrop(2, 2).Apply(ramp(1, 4, 4), rng); cc.Pix[0] != 5 || cc.Pix[3] != 10 {
		t.Fatalf("center crop %v", cc.Pix)
	}
	// HorizontalFlip with p=1 always flips, p=0 never.
	if !bytes.Equal(HorizontalFlip(1).Apply(img, rng).Pix, f.Pix) || !bytes.Equal(HorizontalFlip(0).Apply(img, rng).Pix, img.Pix) {
		t.Fatal("flip probability")
	}
	dst := make([]float32, 3)
	Normalize(Image{C: 1, H: 1, W: 3, Pix: []uint8{0, 255, 51}}, dst)
	if dst[0] != -1 || dst[1] != 1 || dst[2] != float32(51)/127.5-1 {
		t.Fatalf("normalize %v", dst)
	}
}

func collect(t *testing.T, l *Loader, epoch int) (xs [][]float32, ys [][]int64) {
	t.Helper()
	it := l.Epoch(context.Background(), epoch)
	defer it.Close()
	for {
		b, err := it.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		x, _ := torch.Data[float32](b.X)
		y, _ := torch.Data[int64](b.Y)
		xs, ys = append(xs, x), append(ys, y)
		b.Free()
	}
}

// The same seed gives the same batches, augmentations included, whatever the
// number of workers.
func TestLoaderDeterministicAcrossWorkers(t *testing.T) {
	ds := synthetic(103, Shape{1, 8, 8})
	mk := func(workers int) *Loader {
		l, err := NewLoader(ds, LoaderOptions{BatchSize: 10, Shuffle: true, Seed: 42, Workers: workers,
			Transform: Compose(RandomCrop(8, 8, 2), HorizontalFlip(0.5))})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	x1, y1 := collect(t, mk(1), 3)
	x4, y4 := collect(t, mk(4), 3)
	if len(x1) != 11 || len(x1[10]) != 3*64 {
		t.Fatalf("%d batches, last holds %d values", len(x1), len(x1[10]))
	}
	for b := range x1 {
		if fmt.Sprint(x1[b]) != fmt.Sprint(x4[b]) || fmt.Sprint(y1[b]) != fmt.Sprint(y4[b]) {
			t.Fatalf("batch %d differs between 1 and 4 workers", b)
		}
	}
	// Another epoch is shuffled differently; every image appears once.
	_, y5 := collect(t, mk(2), 4)
	if fmt.Sprint(y5) == fmt.Sprint(y1) {
		t.Fatal("two epochs gave the same order")
	}
	order := mk(1).Order(3)
	seen := make([]bool, 103)
	for _, i := range order {
		seen[i] = true
	}
	for i, s := range seen {
		if !s {
			t.Fatalf("image %d missing from the epoch", i)
		}
	}
	// Values are normalised to [-1, 1].
	for _, v := range x1[0] {
		if v < -1 || v > 1 {
			t.Fatalf("value %v outside [-1, 1]", v)
		}
	}
}

func TestLoaderOptions(t *testing.T) {
	ds := synthetic(25, Shape{3, 4, 4})
	l, err := NewLoader(Subset(ds, 21), LoaderOptions{BatchSize: 5, DropLast: true})
	if err != nil {
		t.Fatal(err)
	}
	xs, ys := collect(t, l, 0)
	if len(xs) != 4 || l.NumBatches() != 4 {
		t.Fatalf("drop-last over 21 images of batch 5: %d batches", len(xs))
	}
	// Without shuffling the order is the dataset's, and labels follow.
	if ys[1][0] != 5 || xs[1][0] != float32(5)/127.5-1 {
		t.Fatalf("unshuffled batch 1 starts with label %d, value %v", ys[1][0], xs[1][0])
	}
	if _, err := NewLoader(Subset(ds, 3), LoaderOptions{BatchSize: 5, DropLast: true}); err == nil {
		t.Fatal("no full batch must be an error")
	}
}

// Closing an epoch early frees every batch already built.
func TestLoaderCloseEarlyFreesBatches(t *testing.T) {
	before := torch.LiveTensors()
	ds := synthetic(500, Shape{1, 8, 8})
	l, _ := NewLoader(ds, LoaderOptions{BatchSize: 10, Workers: 3, Prefetch: 8})
	it := l.Epoch(context.Background(), 0)
	b, err := it.Next()
	if err != nil {
		t.Fatal(err)
	}
	b.Free()
	time.Sleep(20 * time.Millisecond) // let the workers fill the prefetch queue
	it.Close()
	if live := torch.LiveTensors() - before; live != 0 {
		t.Fatalf("%d tensors alive after Close", live)
	}
}

// An image that fails to decode mid-epoch stops the epoch with its name.
func TestLoaderReportsBadImage(t *testing.T) {
	root := t.TempDir()
	for i := 0; i < 6; i++ {
		savePNG(t, filepath.Join(root, fmt.Sprintf("%d.png", i)), rgbImage(4, 4, 1, 2, 3))
	}
	ds, err := Open("folder:"+root, Train, "")
	if err != nil {
		t.Fatal(err)
	}
	// Damage a file after opening (the header check passed).
	bad := filepath.Join(root, "4.png")
	b, _ := os.ReadFile(bad)
	_ = os.WriteFile(bad, b[:len(b)-30], 0o644)
	l, _ := NewLoader(ds, LoaderOptions{BatchSize: 2, Workers: 2})
	it := l.Epoch(context.Background(), 0)
	defer it.Close()
	for {
		b, err := it.Next()
		if err == nil {
			b.Free()
			continue
		}
		if !strings.Contains(err.Error(), "4.png") {
			t.Fatalf("error does not name the file: %v", err)
		}
		return
	}
}

func TestLoaderContextCancel(t *testing.T) {
	ds := synthetic(1000, Shape{1, 8, 8})
	l, _ := NewLoader(ds, LoaderOptions{BatchSize: 10, Workers: 2})
	ctx, cancel := context.WithCancel(context.Background())
	it := l.Epoch(ctx, 0)
	defer it.Close()
	b, _ := it.Next()
	b.Free()
	cancel()
	for {
		b, err := it.Next()
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("after cancel: %v", err)
			}
			return
		}
		b.Free()
	}
}

// rangeServer serves files with Range support; when cut > 0 the first full
// response stops after cut bytes, as a dropped connection would.
func rangeServer(files map[string][]byte, cut int) (*httptest.Server, *atomic.Int32) {
	var ranged atomic.Int32
	var first atomic.Bool
	first.Store(true)
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := files[filepath.Base(r.URL.Path)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Range") != "" {
			ranged.Add(1)
		}
		if cut > 0 && r.Header.Get("Range") == "" && first.Swap(false) {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(data[:cut])
			if hj, ok := w.(http.Hijacker); ok {
				conn, _, _ := hj.Hijack()
				conn.Close()
			}
			return
		}
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(data))
	})), &ranged
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestDownloadVerifiesAndResumes(t *testing.T) {
	payload := bytes.Repeat([]byte("dimtorch"), 50000)
	srv, ranged := rangeServer(map[string][]byte{"blob.gz": payload}, 100000)
	defer srv.Close()
	dir := t.TempDir()
	f := RemoteFile{URL: srv.URL + "/blob.gz", Size: int64(len(payload)), SHA256: sum(payload)}
	// The first attempt is cut off: the error says so and the part is kept.
	err := DownloadFiles(context.Background(), []RemoteFile{f}, dir, DownloadOptions{})
	if err == nil {
		t.Fatal("a cut connection must be an error")
	}
	if st, err := os.Stat(filepath.Join(dir, "blob.gz.part")); err != nil || st.Size() != 100000 {
		t.Fatalf("partial file: %v", err)
	}
	// The second attempt resumes with a range request and verifies.
	if err := DownloadFiles(context.Background(), []RemoteFile{f}, dir, DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if ranged.Load() != 1 {
		t.Fatalf("%d range requests, want 1", ranged.Load())
	}
	got, _ := os.ReadFile(filepath.Join(dir, "blob.gz"))
	if !bytes.Equal(got, payload) {
		t.Fatal("resumed file differs")
	}
	if _, err := os.Stat(filepath.Join(dir, "blob.gz.part")); !os.IsNotExist(err) {
		t.Fatal("the part file was left behind")
	}
}

func TestDownloadRejectsBadChecksum(t *testing.T) {
	srv, _ := rangeServer(map[string][]byte{"x.gz": []byte("tampered")}, 0)
	defer srv.Close()
	dir := t.TempDir()
	f := RemoteFile{URL: srv.URL + "/x.gz", Size: 8, SHA256: sum([]byte("original"))}
	err := DownloadFiles(context.Background(), []RemoteFile{f}, dir, DownloadOptions{})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("want a checksum error, got %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("a file that failed verification was kept: %v", entries)
	}
	// A mirror replaces the host; an unknown dataset is refused.
	if err := Download(context.Background(), "imagenet", dir, DownloadOptions{}); err == nil {
		t.Fatal("unknown dataset")
	}
	err = Download(context.Background(), "mnist", dir, DownloadOptions{Mirror: srv.URL})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("mirror without the files: %v", err)
	}
}

func TestDownloadExtractsArchives(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(name string, body []byte) {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(body)
	}
	_ = tw.WriteHeader(&tar.Header{Name: "cifar-100-binary/", Mode: 0o755, Typeflag: tar.TypeDir})
	var rec []byte
	for i := 0; i < 3; i++ {
		rec = append(rec, cifarRecord([]byte{1, byte(i)}, i)...)
	}
	add("cifar-100-binary/train.bin", rec)
	add("cifar-100-binary/test.bin", rec)
	_ = tw.Close()
	_ = zw.Close()
	archive := buf.Bytes()
	srv, _ := rangeServer(map[string][]byte{"cifar-100-binary.tar.gz": archive}, 0)
	defer srv.Close()
	dir := t.TempDir()
	f := RemoteFile{URL: srv.URL + "/cifar-100-binary.tar.gz", Size: int64(len(archive)), SHA256: sum(archive), Extract: true}
	if err := DownloadFiles(context.Background(), []RemoteFile{f}, dir, DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := Open("cifar100", Train, dir)
	if err != nil || d.Len() != 3 {
		t.Fatalf("extracted dataset: %v", err)
	}
	// Archives whose entries escape the directory are refused.
	buf.Reset()
	zw = gzip.NewWriter(&buf)
	tw = tar.NewWriter(zw)
	add("../evil.txt", []byte("x"))
	_ = tw.Close()
	_ = zw.Close()
	p := filepath.Join(t.TempDir(), "evil.tar.gz")
	_ = os.WriteFile(p, buf.Bytes(), 0o644)
	if err := extractTarGz(p, filepath.Join(t.TempDir(), "out")); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("path traversal: %v", err)
	}
}

// BenchmarkLoader measures loader throughput with augmentation (random crop
// with 2-pixel padding and flips) on 28x28 and 32x32 images, batch 64.
// Run: go test -run XXX -bench Loader ./datasets
func BenchmarkLoader(b *testing.B) {
	for _, s := range []Shape{{1, 28, 28}, {3, 32, 32}} {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%dx%dx%d/workers=%d", s.C, s.H, s.W, workers), func(b *testing.B) {
				ds := synthetic(64*50, s)
				l, err := NewLoader(ds, LoaderOptions{BatchSize: 64, Shuffle: true, Workers: workers,
					Transform: Compose(RandomCrop(s.H, s.W, 2), HorizontalFlip(0.5))})
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				images := 0
				for i := 0; i < b.N; i++ {
					it := l.Epoch(context.Background(), i)
					for {
						batch, err := it.Next()
						if err != nil {
							break
						}
						images += int(batch.X.Size(0))
						batch.Free()
					}
					it.Close()
				}
				b.ReportMetric(float64(images)/b.Elapsed().Seconds(), "images/s")
			})
		}
	}
}

// A multi-view loader stacks V independently transformed copies of each
// image view-major; view 0 is what the one-view loader serves.
func TestLoaderViews(t *testing.T) {
	s := Shape{1, 8, 8}
	m := &memory{shape: s, classes: mnistClasses, pix: make([]uint8, 30*64), labels: make([]int, 30)}
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range m.pix {
		m.pix[i] = uint8(rng.IntN(256))
	}
	tr := Compose(RandomCrop(8, 8, 2), HorizontalFlip(0.5))
	mk := func(views int, tr Transform) *Loader {
		l, err := NewLoader(m, LoaderOptions{BatchSize: 10, Shuffle: true, Seed: 3, Workers: 2, Transform: tr, Views: views})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	x1, y1 := collect(t, mk(1, tr), 2)
	l3 := mk(3, tr)
	if l3.Views() != 3 {
		t.Fatalf("Views() = %d", l3.Views())
	}
	x3, y3 := collect(t, l3, 2)
	per := 64
	for b := range x1 {
		if len(x3[b]) != 3*len(x1[b]) || fmt.Sprint(y3[b]) != fmt.Sprint(y1[b]) {
			t.Fatalf("batch %d: %d values for 3 views of %d", b, len(x3[b]), len(x1[b]))
		}
		if fmt.Sprint(x3[b][:10*per]) != fmt.Sprint(x1[b]) {
			t.Fatalf("batch %d: view 0 differs from the one-view loader", b)
		}
		for v := 1; v < 3; v++ {
			if fmt.Sprint(x3[b][v*10*per:(v+1)*10*per]) == fmt.Sprint(x1[b]) {
				t.Fatalf("batch %d: view %d repeats view 0's augmentation", b, v)
			}
		}
	}
	// Without a transform the views are copies.
	xp, _ := collect(t, mk(2, nil), 0)
	if fmt.Sprint(xp[0][:10*per]) != fmt.Sprint(xp[0][10*per:]) {
		t.Fatal("untransformed views differ")
	}
	if _, err := NewLoader(m, LoaderOptions{Views: -1}); err == nil {
		t.Fatal("negative views accepted")
	}
}

// Sharded loaders (data-parallel ranks) split every epoch: the shards are
// disjoint, equal in size, cover the epoch's permutation but for fewer than
// World images, change with the epoch, and serve the same augmented images
// as an unsharded loader does for the same indices; world 1 is the
// unsharded loader.
func TestShardedLoaders(t *testing.T) {
	ds := synthetic(103, Shape{1, 4, 4})
	base := LoaderOptions{BatchSize: 5, Shuffle: true, Seed: 7, Workers: 2}
	full, err := NewLoader(ds, base)
	if err != nil {
		t.Fatal(err)
	}
	for _, world := range []int{1, 2, 3, 4} {
		for epoch := 0; epoch < 2; epoch++ {
			seen := map[int]int{}
			var size int
			for r := 0; r < world; r++ {
				o := base
				o.Rank, o.World = r, world
				l, err := NewLoader(ds, o)
				if err != nil {
					t.Fatal(err)
				}
				shard := l.Order(epoch)
				if r == 0 {
					size = len(shard)
				}
				if len(shard) != size || size != 103/world || l.NumBatches() != (size+4)/5 {
					t.Fatalf("world %d rank %d: shard of %d (rank 0: %d), %d batches", world, r, len(shard), size, l.NumBatches())
				}
				for _, i := range shard {
					seen[i]++
				}
			}
			order := full.Order(epoch)
			for k, i := range order {
				if k < size*world && seen[i] != 1 {
					t.Fatalf("world %d epoch %d: image %d served %d times", world, epoch, i, seen[i])
				}
				if k >= size*world && seen[i] != 0 {
					t.Fatalf("world %d epoch %d: dropped tail image %d served", world, epoch, i)
				}
			}
			if world == 1 && fmt.Sprint(order) != fmt.Sprint(func() []int {
				l, _ := NewLoader(ds, LoaderOptions{BatchSize: 5, Shuffle: true, Seed: 7, Rank: 0, World: 1})
				return l.Order(epoch)
			}()) {
				t.Fatal("world 1 differs from the unsharded loader")
			}
		}
	}
	o := base
	o.Rank, o.World = 1, 2
	l, _ := NewLoader(ds, o)
	if fmt.Sprint(l.Order(0)) == fmt.Sprint(l.Order(1)) {
		t.Fatal("a shard does not change with the epoch")
	}
	// The same image gets the same augmentation in a shard as unsharded.
	tf := o
	tf.Transform = Compose(RandomCrop(4, 4, 1))
	sh, err := NewLoader(ds, tf)
	if err != nil {
		t.Fatal(err)
	}
	plain := base
	plain.Transform = tf.Transform
	un, _ := NewLoader(ds, plain)
	it := sh.Epoch(context.Background(), 0)
	b, err := it.Next()
	it.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	got, _ := b.X.Narrow(0, 0, 1).Float64s()
	want, err := un.build(0, 0, b.Indices[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Free()
	w, _ := want.X.Float64s()
	if fmt.Sprint(got) != fmt.Sprint(w) {
		t.Fatal("the sharded loader augments an image differently from the unsharded one")
	}
	for _, bad := range [][2]int{{2, 2}, {-1, 2}, {0, -1}, {0, 200}} {
		o := base
		o.Rank, o.World = bad[0], bad[1]
		if _, err := NewLoader(ds, o); err == nil {
			t.Fatalf("rank %d of world %d accepted", bad[0], bad[1])
		}
	}
}

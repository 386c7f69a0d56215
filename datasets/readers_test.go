package datasets

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeIDX writes a uint8 IDX file with the given dimensions, gzipped or raw.
func writeIDX(t *testing.T, path string, dims []int, data []byte, gz bool) {
	t.Helper()
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0x08, byte(len(dims))})
	for _, d := range dims {
		_ = binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(data)
	raw := b.Bytes()
	if gz {
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		_, _ = w.Write(raw)
		_ = w.Close()
		raw = z.Bytes()
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeMNIST writes train (n images) and t10k (m images) IDX files where pixel
// p of image i is (i*7 + p) mod 256 and label i mod 10.
func fakeMNIST(t *testing.T, dir string, n, m int, gz bool) {
	t.Helper()
	suffix := ""
	if gz {
		suffix = ".gz"
	}
	for _, s := range []struct {
		prefix string
		count  int
	}{{"train", n}, {"t10k", m}} {
		pix := make([]byte, s.count*28*28)
		for i := range pix {
			pix[i] = byte((i/(28*28))*7 + i%(28*28))
		}
		lab := make([]byte, s.count)
		for i := range lab {
			lab[i] = byte(i % 10)
		}
		writeIDX(t, filepath.Join(dir, s.prefix+"-images-idx3-ubyte"+suffix), []int{s.count, 28, 28}, pix, gz)
		writeIDX(t, filepath.Join(dir, s.prefix+"-labels-idx1-ubyte"+suffix), []int{s.count}, lab, gz)
	}
}

func TestIDXReader(t *testing.T) {
	for _, gz := range []bool{true, false} {
		dir := t.TempDir()
		fakeMNIST(t, dir, 30, 12, gz)
		for _, c := range []struct {
			split Split
			n     int
		}{{Train, 30}, {Test, 12}} {
			d, err := Open("fashion-mnist", c.split, dir)
			if err != nil {
				t.Fatal(err)
			}
			if d.Len() != c.n || d.Shape() != (Shape{1, 28, 28}) || len(d.Classes()) != 10 {
				t.Fatalf("gz=%v %s: len %d shape %v classes %d", gz, c.split, d.Len(), d.Shape(), len(d.Classes()))
			}
			img, label, err := d.Image(13 % c.n)
			if err != nil {
				t.Fatal(err)
			}
			i := 13 % c.n
			if label != i%10 || img.At(0, 0, 5) != byte(i*7+5) || img.At(0, 2, 3) != byte(i*7+2*28+3) {
				t.Fatalf("image %d: label %d, pixels %d %d", i, label, img.At(0, 0, 5), img.At(0, 2, 3))
			}
		}
	}
}

func TestIDXBadInput(t *testing.T) {
	good := func(t *testing.T) string {
		dir := t.TempDir()
		fakeMNIST(t, dir, 20, 5, true)
		return dir
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"truncated gzip", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "train-images-idx3-ubyte.gz")
			b, _ := os.ReadFile(p)
			_ = os.WriteFile(p, b[:len(b)/2], 0o644)
		}, "truncated"},
		{"corrupt gzip", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "train-images-idx3-ubyte.gz")
			b, _ := os.ReadFile(p)
			for i := 20; i < len(b)-8; i++ {
				b[i] ^= 0x5a
			}
			_ = os.WriteFile(p, b, 0o644)
		}, "gzip"},
		{"truncated data", func(t *testing.T, dir string) {
			writeIDX(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), []int{20, 28, 28}, make([]byte, 19*28*28), true)
		}, "truncated"},
		{"wrong magic", func(t *testing.T, dir string) {
			_ = os.WriteFile(filepath.Join(dir, "train-labels-idx1-ubyte.gz"), gzipped([]byte{1, 2, 8, 1, 0, 0, 0, 0}), 0o644)
		}, "wrong magic"},
		{"count mismatch", func(t *testing.T, dir string) {
			writeIDX(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), []int{19}, make([]byte, 19), true)
		}, "20 images but"},
		{"missing labels", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "train-labels-idx1-ubyte.gz"))
		}, "incomplete"},
		{"label out of range", func(t *testing.T, dir string) {
			lab := make([]byte, 20)
			lab[3] = 17
			writeIDX(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), []int{20}, lab, true)
		}, "label 17"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := good(t)
			c.damage(t, dir)
			_, err := Open("fashion-mnist", Train, dir)
			if err == nil {
				t.Fatal("opened a damaged dataset")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("error %q should name the file and say %q", err, c.want)
			}
		})
	}
	// A directory without the dataset explains how to get it.
	_, err := Open("mnist", Train, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "dimtorch data download mnist") {
		t.Fatalf("missing dataset: %v", err)
	}
}

func gzipped(b []byte) []byte {
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	_, _ = w.Write(b)
	_ = w.Close()
	return z.Bytes()
}

// cifarRecord returns one record: label byte(s) then a 3x32x32 image whose
// pixel (c, y, x) is c*50 + y + x + seed.
func cifarRecord(labels []byte, seed int) []byte {
	rec := append([]byte(nil), labels...)
	for c := 0; c < 3; c++ {
		for y := 0; y < 32; y++ {
			for x := 0; x < 32; x++ {
				rec = append(rec, byte(c*50+y+x+seed))
			}
		}
	}
	return rec
}

func TestCIFAR10(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "cifar-10-batches-bin")
	_ = os.MkdirAll(sub, 0o755)
	for b := 1; b <= 5; b++ {
		var data []byte
		for i := 0; i < 3; i++ {
			data = append(data, cifarRecord([]byte{byte((b + i) % 10)}, b*10+i)...)
		}
		_ = os.WriteFile(filepath.Join(sub, "data_batch_"+string(rune('0'+b))+".bin"), data, 0o644)
	}
	_ = os.WriteFile(filepath.Join(sub, "test_batch.bin"), cifarRecord([]byte{9}, 99), 0o644)
	d, err := Open("cifar10", Train, dir)
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 15 || d.Classes()[0] != "airplane" {
		t.Fatalf("len %d classes %v", d.Len(), d.Classes())
	}
	img, label, _ := d.Image(4) // batch 2, record 1
	if label != 3 || img.At(2, 5, 7) != byte(100+5+7+21) {
		t.Fatalf("label %d pixel %d", label, img.At(2, 5, 7))
	}
	te, err := Open("cifar10", Test, dir)
	if err != nil || te.Len() != 1 {
		t.Fatalf("test split: %v", err)
	}
	// Truncation is detected.
	b, _ := os.ReadFile(filepath.Join(sub, "test_batch.bin"))
	_ = os.WriteFile(filepath.Join(sub, "test_batch.bin"), b[:100], 0o644)
	if _, err := Open("cifar10", Test, dir); err == nil || !strings.Contains(err.Error(), "records") {
		t.Fatalf("truncated CIFAR: %v", err)
	}
}

func TestCIFAR100(t *testing.T) {
	dir := t.TempDir()
	var data []byte
	for i := 0; i < 4; i++ {
		data = append(data, cifarRecord([]byte{byte(i), byte(90 + i)}, i)...)
	}
	_ = os.WriteFile(filepath.Join(dir, "train.bin"), data, 0o644)
	_ = os.WriteFile(filepath.Join(dir, "test.bin"), data[:len(data)/2], 0o644)
	d, err := Open("cifar100", Train, dir)
	if err != nil {
		t.Fatal(err)
	}
	_, label, _ := d.Image(2)
	if d.Len() != 4 || label != 92 || len(d.Classes()) != 100 {
		t.Fatalf("len %d fine label %d classes %d", d.Len(), label, len(d.Classes()))
	}
}

func TestSTL10(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "stl10_binary")
	_ = os.MkdirAll(sub, 0o755)
	// Column-major channels: byte (c, x, y) holds (c*60 + 2*x + y) mod 256.
	write := func(name string, n int) {
		var data []byte
		for i := 0; i < n; i++ {
			for c := 0; c < 3; c++ {
				for x := 0; x < 96; x++ {
					for y := 0; y < 96; y++ {
						data = append(data, byte(c*60+2*x+y+i))
					}
				}
			}
		}
		_ = os.WriteFile(filepath.Join(sub, name), data, 0o644)
	}
	write("train_X.bin", 3)
	_ = os.WriteFile(filepath.Join(sub, "train_y.bin"), []byte{1, 10, 4}, 0o644)
	write("unlabeled_X.bin", 2)
	d, err := Open("stl10", Train, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(d)
	img, label, err := d.Image(1)
	if err != nil {
		t.Fatal(err)
	}
	// Row-major after reading: At(c, y, x).
	if label != 9 || img.At(1, 3, 10) != byte(60+20+3+1) || d.Classes()[9] != "truck" {
		t.Fatalf("label %d pixel %d", label, img.At(1, 3, 10))
	}
	u, err := Open("stl10", Unlabeled, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(u)
	if _, l, _ := u.Image(1); u.Len() != 2 || l != -1 || u.Classes() != nil {
		t.Fatalf("unlabeled: len %d label %d", u.Len(), l)
	}
	_ = os.WriteFile(filepath.Join(sub, "train_y.bin"), []byte{1, 2}, 0o644)
	if _, err := Open("stl10", Train, dir); err == nil || !strings.Contains(err.Error(), "3 images but") {
		t.Fatalf("label count mismatch: %v", err)
	}
}

func savePNG(t *testing.T, path string, img image.Image) {
	t.Helper()
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if strings.HasSuffix(path, ".jpg") {
		err = jpeg.Encode(f, img, &jpeg.Options{Quality: 95})
	} else {
		err = png.Encode(f, img)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func rgbImage(w, h int, r, g, b uint8) *image.NRGBA {
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.Set(x, y, color.NRGBA{r, g, b, 255})
		}
	}
	return m
}

func TestFolderClassTree(t *testing.T) {
	root := t.TempDir()
	counts := map[string]int{"cat": 3, "dog": 2, "zebra": 4}
	for class, n := range counts {
		for i := 0; i < n; i++ {
			savePNG(t, filepath.Join(root, class, "img"+string(rune('a'+i))+".png"), rgbImage(10, 8, 200, uint8(i), 7))
		}
	}
	// Nested folders (Tiny ImageNet's class/images/x.JPEG) count too.
	savePNG(t, filepath.Join(root, "dog", "images", "deep.jpg"), rgbImage(10, 8, 1, 2, 3))
	os.WriteFile(filepath.Join(root, "dog", "notes.txt"), []byte("not an image"), 0o644)
	d, err := Open("folder:"+root, Train, "")
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 10 || strings.Join(d.Classes(), ",") != "cat,dog,zebra" || d.Shape() != (Shape{3, 8, 10}) {
		t.Fatalf("len %d classes %v shape %v", d.Len(), d.Classes(), d.Shape())
	}
	img, label, err := d.Image(1)
	if err != nil {
		t.Fatal(err)
	}
	if label != 0 || img.At(0, 4, 4) != 200 || img.At(1, 0, 0) != 1 || img.At(2, 7, 9) != 7 {
		t.Fatalf("label %d rgb %d %d %d", label, img.At(0, 4, 4), img.At(1, 0, 0), img.At(2, 7, 9))
	}
	info, err := Describe("folder:"+root, "")
	if err != nil || info.TrainImages != 10 || info.NumClasses != 3 {
		t.Fatalf("describe: %+v %v", info, err)
	}
}

func TestFolderFlatGraySplitsAndErrors(t *testing.T) {
	root := t.TempDir()
	g := image.NewGray(image.Rect(0, 0, 6, 5))
	g.Pix[7] = 99
	savePNG(t, filepath.Join(root, "train", "a.png"), g)
	savePNG(t, filepath.Join(root, "train", "b.png"), g)
	savePNG(t, filepath.Join(root, "val", "c.png"), g)
	d, err := Open("folder:"+root, Train, "")
	if err != nil {
		t.Fatal(err)
	}
	img, label, _ := d.Image(0)
	if d.Len() != 2 || d.Classes() != nil || label != -1 || d.Shape() != (Shape{1, 5, 6}) || img.Pix[7] != 99 {
		t.Fatalf("flat gray: len %d label %d shape %v", d.Len(), label, d.Shape())
	}
	if te, err := Open("folder:"+root, Test, ""); err != nil || te.Len() != 1 {
		t.Fatalf("val as test split: %v", err)
	}
	// An unreadable image is reported by name when the folder is opened.
	os.WriteFile(filepath.Join(root, "train", "broken.png"), []byte("\x89PNG garbage"), 0o644)
	_, err = Open("folder:"+root, Train, "")
	if err == nil || !strings.Contains(err.Error(), "broken.png") {
		t.Fatalf("unreadable image: %v", err)
	}
	// Mixed layouts and empty folders are refused.
	mixed := t.TempDir()
	savePNG(t, filepath.Join(mixed, "x.png"), g)
	savePNG(t, filepath.Join(mixed, "cls", "y.png"), g)
	if _, err := Open("folder:"+mixed, Train, ""); err == nil || !strings.Contains(err.Error(), "mixes") {
		t.Fatalf("mixed layout: %v", err)
	}
	if _, err := Open("folder:"+t.TempDir(), Train, ""); err == nil {
		t.Fatal("an empty folder must be an error")
	}
	if _, err := Open("folder:/nonexistent/x", Train, ""); err == nil {
		t.Fatal("a missing folder must be an error")
	}
	if _, err := Open("fashion-mnist", Unlabeled, ""); !errors.Is(err, ErrNoSplit) {
		t.Fatalf("missing split: %v", err)
	}
}

func TestAugmentTransforms(t *testing.T) {
	for _, name := range []string{"fashion-mnist", "mnist", "cifar10", "cifar100", "stl10"} {
		if AugmentTransform(name) == nil {
			t.Errorf("%s has no augmentation", name)
		}
	}
	if s := AugmentTransform("mnist").String(); strings.Contains(s, "hflip") {
		t.Errorf("digits must not be flipped: %s", s)
	}
	if s := ScaleAugment("mnist", 28, 28, 0.5).String(); strings.Contains(s, "hflip") || !strings.Contains(s, "scale 0.5-1") {
		t.Errorf("mnist scale augmentation: %s", s)
	}
	if s := ScaleAugment("fashion-mnist", 28, 28, 0.5).String(); !strings.Contains(s, "hflip") {
		t.Errorf("fashion-mnist scale augmentation has no flips: %s", s)
	}
	if DefaultTransform("fashion-mnist", Train) != nil {
		t.Error("Fashion-MNIST trains at native size without augmentation by default, as the original")
	}
}

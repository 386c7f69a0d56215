package datasets

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The readers of outside files take any bytes without panicking, hanging or
// allocating from a header more than the file can hold, and read a valid
// file back as written. The seed corpora (testdata/fuzz/FuzzX) run with the
// other tests; `go test -fuzz '^FuzzX$'` explores from them.

// idxBytes is a raw IDX file of the given dimensions and data.
func idxBytes(dims []int, data []byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0x08, byte(len(dims))})
	for _, d := range dims {
		_ = binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(data)
	return b.Bytes()
}

func gz(b []byte) []byte {
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	_, _ = w.Write(b)
	_ = w.Close()
	return z.Bytes()
}

func fuzzRamp(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
}

func writeTemp(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// idxSeeds: valid files (raw and gzipped), a truncated one, corrupt
// headers, and headers announcing far more than the file holds (2^31
// images; a product of dimensions that overflows 64 bits to 0).
func idxSeeds() [][]byte {
	img := idxBytes([]int{3, 4, 5}, fuzzRamp(60, 1))
	return [][]byte{
		img,
		gz(img),
		idxBytes([]int{7}, fuzzRamp(7, 0)),
		img[:len(img)-9],
		gz(img)[:20],
		append([]byte{0, 0, 0x0d, 3}, img[4:]...),
		idxBytes([]int{1 << 31, 28, 28}, nil),
		gz(idxBytes([]int{1 << 31, 28, 28}, nil)),
		idxBytes([]int{1 << 16, 1 << 16, 1 << 16, 1 << 16}, nil),
		idxBytes([]int{0, 28, 28}, nil),
		{0, 0, 8},
	}
}

// FuzzReadIDX: ReadIDX on any bytes, raw or gzipped. A file it accepts has
// exactly the data its header announces, and a file rebuilt from what it
// returns reads back the same.
func FuzzReadIDX(f *testing.F) {
	for _, s := range idxSeeds() {
		f.Add(s)
	}
	dir := f.TempDir() // reused: a fuzzing process runs one input at a time
	f.Fuzz(func(t *testing.T, b []byte) {
		p := writeTemp(t, dir, "x-idx", b)
		dims, data, err := ReadIDX(p)
		if err != nil {
			return
		}
		if len(dims) < 1 || len(dims) > 4 {
			t.Fatalf("accepted %d dimensions", len(dims))
		}
		n := big.NewInt(1) // no overflow to hide a wrong count
		for _, d := range dims {
			if d < 0 {
				t.Fatalf("negative dimension in %v", dims)
			}
			n.Mul(n, big.NewInt(int64(d)))
		}
		if n.Cmp(big.NewInt(int64(len(data)))) != 0 {
			t.Fatalf("dimensions %v announce %v bytes, got %d", dims, n, len(data))
		}
		if !(len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b) && len(data) > len(b) {
			t.Fatalf("%d bytes of data from a %d-byte raw file", len(data), len(b))
		}
		// Round trip, raw and gzipped.
		for i, again := range [][]byte{idxBytes(dims, data), gz(idxBytes(dims, data))} {
			q := writeTemp(t, dir, "again", again)
			dims2, data2, err := ReadIDX(q)
			if err != nil || !slices.Equal(dims, dims2) || !bytes.Equal(data, data2) {
				t.Fatalf("rewrite %d: %v %v: %v", i, dims2, len(data2), err)
			}
		}
	})
}

// FuzzIDXPair: an image file and a label file as a Fashion-MNIST train
// split. An opened dataset has a positive number of images of positive
// size, every image readable and every label a class.
func FuzzIDXPair(f *testing.F) {
	f.Add(idxBytes([]int{3, 4, 5}, fuzzRamp(60, 1)), idxBytes([]int{3}, []byte{0, 9, 4}))
	f.Add(gz(idxBytes([]int{2, 2, 2}, fuzzRamp(8, 3))), gz(idxBytes([]int{2}, []byte{1, 2})))
	f.Add(idxBytes([]int{3, 4, 5}, fuzzRamp(60, 1)), idxBytes([]int{3}, []byte{0, 10, 4}))
	f.Add(idxBytes([]int{3, 0, 5}, nil), idxBytes([]int{3}, []byte{0, 1, 2}))
	f.Add(idxBytes([]int{0, 0, 0}, nil), idxBytes([]int{0}, nil))
	dir := f.TempDir() // reused: a fuzzing process runs one input at a time
	f.Fuzz(func(t *testing.T, images, labels []byte) {
		writeTemp(t, dir, "train-images-idx3-ubyte", images)
		writeTemp(t, dir, "train-labels-idx1-ubyte", labels)
		d, err := openIDXPair(dir, Train, fashionClasses)
		if err != nil {
			return
		}
		s := d.Shape()
		if d.Len() < 1 || s.C != 1 || s.H < 1 || s.W < 1 {
			t.Fatalf("opened %d images of shape %v", d.Len(), s)
		}
		for i := 0; i < d.Len(); i++ {
			img, label, err := d.Image(i)
			if err != nil {
				t.Fatal(err)
			}
			if len(img.Pix) != s.C*s.H*s.W || label < 0 || label >= len(d.Classes()) {
				t.Fatalf("image %d: %d pixels, label %d", i, len(img.Pix), label)
			}
		}
	})
}

// cifarBytes is n CIFAR records with labelBytes label bytes each.
func cifarBytes(n, labelBytes int) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		for j := 0; j < labelBytes; j++ {
			b = append(b, byte((i+j)%10))
		}
		b = append(b, fuzzRamp(cifarPixels, i)...)
	}
	return b
}

// FuzzCIFAR: readCIFAR on any bytes, as a CIFAR-10 (one label byte) or
// CIFAR-100 (coarse and fine label bytes) file. What it accepts are whole
// records whose labels and pixels come back as they are in the file.
func FuzzCIFAR(f *testing.F) {
	one := cifarBytes(2, 1)
	two := cifarBytes(2, 2)
	f.Add(one, false)
	f.Add(two, true)
	f.Add(one[:len(one)-1], false)
	f.Add(append([]byte{200}, one[1:]...), false)
	f.Add([]byte{}, true)
	dir := f.TempDir() // reused: a fuzzing process runs one input at a time
	f.Fuzz(func(t *testing.T, b []byte, hundred bool) {
		writeTemp(t, dir, "data.bin", b)
		labelBytes, labelAt, classes := 1, 0, cifar10Classes
		if hundred {
			labelBytes, labelAt, classes = 2, 1, numbered(100)
		}
		d, err := readCIFAR(dir, []string{"data.bin"}, labelBytes, labelAt, classes)
		if err != nil {
			return
		}
		rec := labelBytes + cifarPixels
		if d.Len() < 1 || d.Len()*rec != len(b) || d.Shape() != (Shape{3, 32, 32}) {
			t.Fatalf("%d images of %v from %d bytes", d.Len(), d.Shape(), len(b))
		}
		for i := 0; i < d.Len(); i++ {
			img, label, err := d.Image(i)
			if err != nil {
				t.Fatal(err)
			}
			r := b[i*rec : (i+1)*rec]
			if label != int(r[labelAt]) || !bytes.Equal(img.Pix, r[labelBytes:]) {
				t.Fatalf("image %d differs from its record", i)
			}
		}
	})
}

// stlColumnMajor stores an image given in CHW row-major order the way
// STL-10 does: each channel column-major.
func stlColumnMajor(pix []byte) []byte {
	out := make([]byte, len(pix))
	for c := 0; c < 3; c++ {
		for y := 0; y < stlSide; y++ {
			for x := 0; x < stlSide; x++ {
				out[c*stlSide*stlSide+x*stlSide+y] = pix[c*stlSide*stlSide+y*stlSide+x]
			}
		}
	}
	return out
}

// FuzzSTL10: openSTL10 on any image and label bytes, labelled (train) or
// not. With pad, the image bytes are padded with zeros to a whole number of
// images (so that short inputs, quick to mutate, reach the reading of
// images too). What it accepts are whole images, each read back transposed
// from its column-major channels, with labels 1..10 mapped to 0..9.
func FuzzSTL10(f *testing.F) {
	// Short inputs only: the fuzzer minimizes every new input it finds
	// interesting, one byte at a time, and images of 27,648 bytes would
	// keep it minimizing.
	f.Add([]byte("abc"), []byte{10}, true, false)     // one image
	f.Add([]byte("abc"), []byte{}, true, true)        // unlabeled
	f.Add([]byte("abc"), []byte{1, 10}, false, false) // truncated
	f.Add([]byte{1, 2, 3}, []byte{11}, true, false)   // a label outside 1..10
	f.Add([]byte{9}, []byte{1, 2}, true, false)       // more labels than images
	f.Add([]byte{}, []byte{}, true, true)             // empty

	dir := f.TempDir() // reused: a fuzzing process runs one input at a time
	f.Fuzz(func(t *testing.T, xb, yb []byte, pad, unlabeled bool) {
		if pad && len(xb)%stlPixels != 0 {
			xb = append(slices.Clip(xb), make([]byte, stlPixels-len(xb)%stlPixels)...) // a copy: never write to an input
		}
		split := Train
		if unlabeled {
			split = Unlabeled
		}
		writeTemp(t, dir, string(split)+"_X.bin", xb)
		writeTemp(t, dir, string(split)+"_y.bin", yb)
		d, err := openSTL10(dir, split)
		if err != nil {
			return
		}
		defer Close(d)
		if d.Len() < 1 || d.Len()*stlPixels != len(xb) {
			t.Fatalf("%d images from %d bytes", d.Len(), len(xb))
		}
		for i := 0; i < d.Len(); i++ {
			img, label, err := d.Image(i)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(stlColumnMajor(img.Pix), xb[i*stlPixels:(i+1)*stlPixels]) {
				t.Fatalf("image %d differs from the file", i)
			}
			want := -1
			if !unlabeled {
				want = int(yb[i]) - 1
			}
			if label != want || (!unlabeled && (label < 0 || label > 9)) {
				t.Fatalf("image %d: label %d, want %d", i, label, want)
			}
		}
		if _, _, err := d.Image(d.Len()); err == nil {
			t.Fatal("read past the end")
		}
	})
}

// Package datasetstest writes small datasets in real file formats for tests
// of the packages that read them.
package datasetstest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// WriteIDX writes a gzipped uint8 IDX file.
func WriteIDX(path string, dims []int, data []byte) error {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0x08, byte(len(dims))})
	for _, d := range dims {
		_ = binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(data)
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, z.Bytes(), 0o644)
}

// WriteMNISTLike writes train and test splits of 28x28 grayscale images in
// the MNIST/Fashion-MNIST file layout. Each of the 10 classes is a bright bar
// at its own position plus noise, so a classifier can learn them.
func WriteMNISTLike(dir string, train, test int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, s := range []struct {
		prefix string
		n      int
	}{{"train", train}, {"t10k", test}} {
		pix := make([]byte, s.n*28*28)
		lab := make([]byte, s.n)
		for i := 0; i < s.n; i++ {
			c := rng.IntN(10)
			lab[i] = byte(c)
			img := pix[i*784 : (i+1)*784]
			for p := range img {
				img[p] = byte(rng.IntN(60))
			}
			row := 2 + c*2
			for y := row; y < row+3; y++ {
				for x := 4; x < 24; x++ {
					img[y*28+x] = byte(180 + rng.IntN(75))
				}
			}
		}
		if err := WriteIDX(filepath.Join(dir, s.prefix+"-images-idx3-ubyte.gz"), []int{s.n, 28, 28}, pix); err != nil {
			return err
		}
		if err := WriteIDX(filepath.Join(dir, s.prefix+"-labels-idx1-ubyte.gz"), []int{s.n}, lab); err != nil {
			return err
		}
	}
	return nil
}

package datasets

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// IDX is the format of MNIST and Fashion-MNIST: a magic number whose third
// byte is the element type (0x08 = uint8) and fourth the number of
// dimensions, the big-endian uint32 sizes, then the data.

func init() {
	for _, name := range []string{"fashion-mnist", "mnist"} {
		name := name
		get := "Run `dimtorch data download " + name + "`."
		if name == "fashion-mnist" {
			get = "Install it with `apt-get install dataset-fashion-mnist` (offline), or run `dimtorch data download fashion-mnist`."
		}
		classes := mnistClasses
		augment := Compose(RandomCrop(28, 28, 2))
		if name == "fashion-mnist" {
			classes = fashionClasses
			augment = Compose(RandomCrop(28, 28, 2), HorizontalFlip(0.5))
		}
		register(&spec{
			name:   name,
			splits: []Split{Train, Test},
			open: func(dir string, split Split) (Dataset, error) {
				return openIDXPair(dir, split, classes)
			},
			files:    []string{"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"},
			howToGet: get,
			augment:  augment,
			noFlip:   name == "mnist",
			size:     28,
		})
	}
}

var fashionClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
var mnistClasses = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

func openIDXPair(dir string, split Split, classes []string) (Dataset, error) {
	prefix := "train"
	if split == Test {
		prefix = "t10k"
	}
	imgPath, err := findIDX(dir, prefix+"-images-idx3-ubyte")
	if err != nil {
		return nil, err
	}
	lblPath, err := findIDX(dir, prefix+"-labels-idx1-ubyte")
	if err != nil {
		return nil, err
	}
	dims, pix, err := ReadIDX(imgPath)
	if err != nil {
		return nil, err
	}
	if len(dims) != 3 {
		return nil, fmt.Errorf("%s: an image file needs 3 dimensions, it has %v", imgPath, dims)
	}
	if dims[0] == 0 || dims[1] == 0 || dims[2] == 0 {
		return nil, fmt.Errorf("%s: the header announces %v: no images, or images of no pixels", imgPath, dims)
	}
	ldims, lab, err := ReadIDX(lblPath)
	if err != nil {
		return nil, err
	}
	if len(ldims) != 1 {
		return nil, fmt.Errorf("%s: a label file needs 1 dimension, it has %v", lblPath, ldims)
	}
	if ldims[0] != dims[0] {
		return nil, fmt.Errorf("%s holds %d images but %s holds %d labels: the files do not belong together", imgPath, dims[0], lblPath, ldims[0])
	}
	labels := make([]int, len(lab))
	for i, l := range lab {
		if int(l) >= len(classes) {
			return nil, fmt.Errorf("%s: label %d of image %d is not a class (0..%d)", lblPath, l, i, len(classes)-1)
		}
		labels[i] = int(l)
	}
	return &memory{shape: Shape{1, dims[1], dims[2]}, pix: pix, labels: labels, classes: classes}, nil
}

// findIDX returns base.gz or base in dir, preferring whichever exists.
func findIDX(dir, base string) (string, error) {
	for _, n := range []string{base + ".gz", base} {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: neither %s.gz nor %s is there (the dataset is incomplete)", dir, base, base)
}

// ReadIDX reads a uint8 IDX file, gzipped or not (detected from the content),
// and returns its dimensions and data. Truncated, corrupt or inconsistent
// files give an error naming the file and the problem. The size the header
// announces is checked against what the file can hold before anything is
// allocated for it: a raw file must hold exactly that many bytes, a gzipped
// one cannot expand to more than maxDeflateRatio times its size, and its
// data is read as it comes rather than allocated from the header.
func ReadIDX(path string) ([]int, []uint8, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		return readIDXGzip(path, raw)
	}
	dims, n, err := idxHeader(path, raw, int64(len(raw)))
	if err != nil {
		return nil, nil, err
	}
	body := raw[4+4*len(dims):]
	if int64(len(body)) != n {
		return nil, nil, idxSizeError(path, dims, n, int64(len(body)))
	}
	return dims, body, nil
}

// maxDeflateRatio bounds how much deflate can expand its input (the format's
// limit is about 1032:1): a gzipped file of s bytes holds at most
// maxDeflateRatio*s bytes of data.
const maxDeflateRatio = 1100

func readIDXGzip(path string, raw []byte) ([]int, []uint8, error) {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: corrupt gzip data: %v", path, err)
	}
	gzErr := func(err error) error {
		return fmt.Errorf("%s: corrupt or truncated gzip data: %v", path, err)
	}
	// The header: 4 bytes, then 4 per dimension (at most 4).
	head := make([]byte, 4, 4+4*4)
	if k, err := io.ReadFull(zr, head); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, nil, fmt.Errorf("%s: %d bytes is too short for an IDX header (truncated?)", path, k)
		}
		return nil, nil, gzErr(err)
	}
	if nd := int(head[3]); nd >= 1 && nd <= 4 && head[0] == 0 && head[1] == 0 && head[2] == 0x08 {
		head = head[:4+4*nd]
		if _, err := io.ReadFull(zr, head[4:]); err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, nil, fmt.Errorf("%s: truncated IDX header", path)
		} else if err != nil {
			return nil, nil, gzErr(err)
		}
	}
	limit := int64(len(raw)) * maxDeflateRatio
	dims, n, err := idxHeader(path, head, limit)
	if err != nil {
		return nil, nil, err
	}
	// Read at most n+1 bytes as they come: a header that overstates the
	// data costs no more memory than the data.
	body, err := io.ReadAll(io.LimitReader(zr, n+1))
	if err != nil {
		return nil, nil, gzErr(err)
	}
	if int64(len(body)) != n {
		got := int64(len(body))
		if got > n {
			// Count the rest (bounded by the deflate ratio) for the message.
			rest, err := io.Copy(io.Discard, zr)
			if err != nil {
				return nil, nil, gzErr(err)
			}
			got += rest
		}
		return nil, nil, idxSizeError(path, dims, n, got)
	}
	// Read to the end so that the gzip checksum is verified.
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return nil, nil, gzErr(err)
	}
	return dims, body, nil
}

// idxHeader checks an IDX header at the start of data and returns its
// dimensions and the number of data bytes they announce, refusing a count
// larger than limit (what the file can hold) without computing it in full.
func idxHeader(path string, data []byte, limit int64) ([]int, int64, error) {
	if len(data) < 4 {
		return nil, 0, fmt.Errorf("%s: %d bytes is too short for an IDX header (truncated?)", path, len(data))
	}
	if data[0] != 0 || data[1] != 0 {
		return nil, 0, fmt.Errorf("%s: wrong magic number %#x (not an IDX file)", path, binary.BigEndian.Uint32(data[:4]))
	}
	if data[2] != 0x08 {
		return nil, 0, fmt.Errorf("%s: IDX element type %#x is not uint8 (0x08)", path, data[2])
	}
	nd := int(data[3])
	if nd < 1 || nd > 4 {
		return nil, 0, fmt.Errorf("%s: IDX with %d dimensions is not supported", path, nd)
	}
	if len(data) < 4+4*nd {
		return nil, 0, fmt.Errorf("%s: truncated IDX header", path)
	}
	dims := make([]int, nd)
	zero := false
	for i := range dims {
		dims[i] = int(binary.BigEndian.Uint32(data[4+4*i:]))
		zero = zero || dims[i] == 0
	}
	if zero {
		return dims, 0, nil
	}
	n := int64(1)
	for _, d := range dims {
		// n*d > limit, without overflow (n <= limit, d <= 2^32-1).
		if n > limit/int64(d) {
			return nil, 0, fmt.Errorf("%s: truncated or not an IDX file: the header announces %v, more bytes of data than the file can hold (at most %d)", path, dims, limit)
		}
		n *= int64(d)
	}
	return dims, n, nil
}

func idxSizeError(path string, dims []int, n, got int64) error {
	what := "truncated"
	if got > n {
		what = "has trailing bytes"
	}
	return fmt.Errorf("%s: %s: the header announces %v = %d bytes of data, the file has %d", path, what, dims, n, got)
}

package datasets

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CIFAR-10 and CIFAR-100, binary versions: records of label byte(s) followed
// by 3072 bytes of a 32x32 RGB image in CHW order. CIFAR-10: one label byte;
// files data_batch_1..5.bin and test_batch.bin. CIFAR-100: a coarse and a
// fine label byte; files train.bin and test.bin. The labels used are
// CIFAR-100's 100 fine classes.

const cifarPixels = 3 * 32 * 32

func init() {
	register(&spec{
		name:   "cifar10",
		size:   32,
		splits: []Split{Train, Test},
		open: func(dir string, split Split) (Dataset, error) {
			d := subdirWith(dir, "cifar-10-batches-bin")
			files := []string{"test_batch.bin"}
			if split == Train {
				files = []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}
			}
			classes := readNames(filepath.Join(d, "batches.meta.txt"), cifar10Classes)
			return readCIFAR(d, files, 1, 0, classes)
		},
		files:    []string{"cifar-10-batches-bin", "test_batch.bin", "data_batch_1.bin"},
		augment:  Compose(RandomCrop(32, 32, 4), HorizontalFlip(0.5)),
		howToGet: "Run `dimtorch data download cifar10` (the binary version, 163 MiB).",
	})
	register(&spec{
		name:   "cifar100",
		size:   32,
		splits: []Split{Train, Test},
		open: func(dir string, split Split) (Dataset, error) {
			d := subdirWith(dir, "cifar-100-binary")
			f := "test.bin"
			if split == Train {
				f = "train.bin"
			}
			classes := readNames(filepath.Join(d, "fine_label_names.txt"), nil)
			if len(classes) != 100 {
				classes = numbered(100)
			}
			return readCIFAR(d, []string{f}, 2, 1, classes)
		},
		files:    []string{"cifar-100-binary", "train.bin", "test.bin"},
		augment:  Compose(RandomCrop(32, 32, 4), HorizontalFlip(0.5)),
		howToGet: "Run `dimtorch data download cifar100` (the binary version, 161 MiB).",
	})
}

var cifar10Classes = []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

// subdirWith returns dir/sub when it is a directory (the layout of the
// unpacked archive), else dir (the files placed directly).
func subdirWith(dir, sub string) string {
	if isDir(filepath.Join(dir, sub)) {
		return filepath.Join(dir, sub)
	}
	return dir
}

// readNames reads one class name per non-empty line, or returns def.
func readNames(path string, def []string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return def
	}
	return out
}

func numbered(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(i)
	}
	return out
}

func readCIFAR(dir string, files []string, labelBytes, labelAt int, classes []string) (Dataset, error) {
	rec := labelBytes + cifarPixels
	m := &memory{shape: Shape{3, 32, 32}, classes: classes}
	for _, f := range files {
		p := filepath.Join(dir, f)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%v (the dataset is incomplete: download it again)", err)
		}
		if len(b) == 0 || len(b)%rec != 0 {
			return nil, fmt.Errorf("%s: %d bytes is not a whole number of %d-byte records (truncated or not a CIFAR binary file)", p, len(b), rec)
		}
		for off := 0; off < len(b); off += rec {
			l := int(b[off+labelAt])
			if l >= len(classes) {
				return nil, fmt.Errorf("%s: record %d has label %d, outside 0..%d (not a CIFAR binary file of this kind)", p, off/rec, l, len(classes)-1)
			}
			m.labels = append(m.labels, l)
			m.pix = append(m.pix, b[off+labelBytes:off+rec]...)
		}
	}
	return m, nil
}

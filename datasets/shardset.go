package datasets

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// shards:DIR as a Dataset: random access to the samples of a shard
// directory (DIR for the training split, DIR/test for the test split when
// it holds shards), for evaluation, embedding and the online probe's test
// pass; training streams the shards with a ShardLoader instead. Opening
// reads every member's header once (the data is skipped by seeking) and
// keeps where each sample's image lies; Image reads and decodes it.

type shardDataset struct {
	dir      string
	files    []*os.File
	names    []string
	samples  []shardLoc
	classes  []string
	shape    Shape
	channels int
}

type shardLoc struct {
	shard   int32
	label   int32
	off, n  int64
	key     string
	hdrOffs int64
}

// ShardsPrefix is how a shard directory is named as a dataset:
// shards:DIR.
const ShardsPrefix = "shards:"

func shardSplitDir(dir string, split Split) (string, error) {
	switch split {
	case Train:
		return dir, nil
	case Test:
		t := filepath.Join(dir, "test")
		if _, err := os.Stat(filepath.Join(t, ShardManifestName)); err != nil {
			return "", fmt.Errorf("shards %s: %w %q (no %s)", dir, ErrNoSplit, split, filepath.Join(t, ShardManifestName))
		}
		return t, nil
	}
	return "", fmt.Errorf("shards %s: %w %q", dir, ErrNoSplit, split)
}

func shardSplits(dir string) ([]Split, error) {
	if _, err := ReadShardManifest(dir); err != nil {
		return nil, err
	}
	if _, err := shardSplitDir(dir, Test); err == nil {
		return []Split{Train, Test}, nil
	}
	return []Split{Train}, nil
}

// OpenShardDataset opens one split of a shard directory for random access.
func OpenShardDataset(dir string, split Split) (Dataset, error) {
	sd, err := shardSplitDir(dir, split)
	if err != nil {
		return nil, err
	}
	set, err := OpenShards(sd)
	if err != nil {
		return nil, err
	}
	d := &shardDataset{dir: sd, classes: set.Manifest.Classes}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	for i, e := range set.Manifest.Shards {
		f, err := os.Open(filepath.Join(sd, e.Name))
		if err != nil {
			return nil, err
		}
		d.files, d.names = append(d.files, f), append(d.names, e.Name)
		n := len(d.samples)
		if err := d.scan(i, f); err != nil {
			return nil, err
		}
		if got := len(d.samples) - n; got != e.Samples {
			return nil, fmt.Errorf("shard %s: %d samples, the manifest says %d", e.Name, got, e.Samples)
		}
	}
	b, err := d.raw(0)
	if err != nil {
		return nil, err
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		s := d.samples[0]
		return nil, fmt.Errorf("shard %s: sample %s (byte %d): unreadable image: %v", d.names[s.shard], s.key, s.hdrOffs, err)
	}
	d.channels = 3
	if sh := set.Manifest.Shape; sh != nil {
		d.channels = sh.C
	} else if isGray(cfg.ColorModel) {
		d.channels = 1
	}
	d.shape = Shape{d.channels, cfg.Height, cfg.Width}
	ok = true
	return d, nil
}

// scan records where every sample's image and label are in shard i.
func (d *shardDataset) scan(i int, f *os.File) error {
	tr := tar.NewReader(f)
	name := d.names[i]
	cur := -1 // the sample being read (index in d.samples)
	for {
		before, _ := f.Seek(0, io.SeekCurrent)
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("shard %s: damaged near byte %d: %v", name, before, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		off, _ := f.Seek(0, io.SeekCurrent)
		key, ext := splitMember(h.Name)
		if cur < 0 || d.samples[cur].key != key {
			d.samples = append(d.samples, shardLoc{shard: int32(i), label: -1, off: -1, key: key, hdrOffs: (before + 511) / 512 * 512})
			cur = len(d.samples) - 1
		}
		s := &d.samples[cur]
		switch ext {
		case "jpg", "jpeg", "png":
			s.off, s.n = off, h.Size
		case "cls":
			if h.Size > 32 {
				return fmt.Errorf("shard %s: sample %s's class is %d bytes long", name, key, h.Size)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				return fmt.Errorf("shard %s: truncated in %s: %v", name, h.Name, err)
			}
			l, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || l < 0 {
				return fmt.Errorf("shard %s: sample %s: class %q is not a number from 0", name, key, b)
			}
			s.label = int32(l)
		}
	}
	return nil
}

// raw reads sample i's image bytes.
func (d *shardDataset) raw(i int) ([]byte, error) {
	s := d.samples[i]
	if s.off < 0 {
		return nil, fmt.Errorf("shard %s: sample %s (byte %d) has no jpg or png field", d.names[s.shard], s.key, s.hdrOffs)
	}
	b := make([]byte, s.n)
	if _, err := d.files[s.shard].ReadAt(b, s.off); err != nil {
		return nil, fmt.Errorf("shard %s: sample %s (byte %d): %v", d.names[s.shard], s.key, s.hdrOffs, err)
	}
	return b, nil
}

func (d *shardDataset) Len() int          { return len(d.samples) }
func (d *shardDataset) Shape() Shape      { return d.shape }
func (d *shardDataset) Classes() []string { return d.classes }

func (d *shardDataset) Image(i int) (Image, int, error) {
	if i < 0 || i >= len(d.samples) {
		return Image{}, 0, fmt.Errorf("image index %d out of range [0, %d)", i, len(d.samples))
	}
	b, err := d.raw(i)
	if err != nil {
		return Image{}, 0, err
	}
	img, err := decodeImage(b, d.channels, reducedSide)
	if err != nil {
		s := d.samples[i]
		return Image{}, 0, fmt.Errorf("shard %s: sample %s (byte %d): unreadable image: %v", d.names[s.shard], s.key, s.hdrOffs, err)
	}
	return img, int(d.samples[i].label), nil
}

// Close implements io.Closer.
func (d *shardDataset) Close() error {
	var errs []error
	for _, f := range d.files {
		errs = append(errs, f.Close())
	}
	d.files = nil
	return errors.Join(errs...)
}

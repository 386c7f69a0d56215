package datasets

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"image"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dimtorch/dimtorch/internal/atomicfile"
)

// Shards in the WebDataset layout: every shard is a POSIX tar file, and a
// sample is the consecutive members whose names share a key (the member's
// path up to the first "." of its file name), the rest of the name being
// the field: KEY.jpg or KEY.png the image, KEY.cls the class number in
// decimal, KEY.json anything else. Shards are named with a running number
// (train-000000.tar, ...), listed by brace notation
// (train-{000000..000127}.tar), and described by a manifest
// (manifest.json) with each shard's samples, bytes and SHA-256.

// ShardField is one member of a sample: its extension ("jpg", "cls", ...)
// and bytes.
type ShardField struct {
	Ext  string
	Data []byte
}

// ShardSample is one sample of a shard.
type ShardSample struct {
	Key    string
	Fields []ShardField
	// Shard and Offset locate the sample: the shard's name and the byte
	// offset of its first member's header.
	Shard  string
	Offset int64
}

// Field returns the bytes of the field with extension ext.
func (s ShardSample) Field(ext string) ([]byte, bool) {
	for _, f := range s.Fields {
		if f.Ext == ext {
			return f.Data, true
		}
	}
	return nil, false
}

// ShardManifest describes a set of shards (manifest.json beside them).
type ShardManifest struct {
	Format  string       `json:"format"`
	Pattern string       `json:"pattern"` // the shards in brace notation
	Samples int          `json:"samples"`
	Classes []string     `json:"classes,omitempty"`
	Shape   *Shape       `json:"shape,omitempty"` // of the source's images, when they share one
	Source  string       `json:"source"`
	Order   string       `json:"order,omitempty"` // "shuffled (seed N)" when written with ShardWriterOptions.Shuffle
	Shards  []ShardEntry `json:"shards"`
	Created time.Time    `json:"created"`
}

// ShardEntry is one shard of a manifest.
type ShardEntry struct {
	Name    string `json:"name"`
	Samples int    `json:"samples"`
	Bytes   int64  `json:"bytes"`
	SHA256  string `json:"sha256"`
}

const shardFormat = "dimtorch-shards/1"

// ShardManifestName is the manifest's file name in a shard directory.
const ShardManifestName = "manifest.json"

// ShardWriterOptions configure WriteShards.
type ShardWriterOptions struct {
	Dir      string // where the shards go (created)
	Prefix   string // shard names: PREFIX-000000.tar, ... (default "train")
	MaxBytes int64  // a shard is closed before it would pass this size (default 1 GB); one sample always fits
	Classes  []string
	Shape    *Shape
	Source   string // recorded in the manifest
	// Shuffle writes the samples in an order drawn from Seed instead of
	// the source's. A loader's shuffle buffer only mixes
	// samples within its size, so data stored class by class, written in its
	// order, trains on one class at a time: write it shuffled.
	Shuffle bool
	Seed    uint64
	// Progress, when set, is told the samples written so far.
	Progress func(done, total int)
}

// WriteShards writes n samples, sample(i) for i in order (or in the
// order o.Shuffle draws from o.Seed), into shards of
// at most MaxBytes and the manifest. Each shard is written to a temporary
// file and renamed when complete, the manifest last: an interrupted run
// leaves no manifest and no partial shard. The output is the same bytes
// for the same samples (fixed modification times, no user names).
func WriteShards(ctx context.Context, n int, sample func(i int) (ShardSample, error), o ShardWriterOptions) (ShardManifest, error) {
	if o.Prefix == "" {
		o.Prefix = "train"
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 1e9
	}
	if strings.ContainsAny(o.Prefix, "/{}") || o.MaxBytes < 0 || n < 1 {
		return ShardManifest{}, fmt.Errorf("shards: prefix %q, max bytes %d, %d samples: want a plain prefix, a positive size, at least one sample", o.Prefix, o.MaxBytes, n)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return ShardManifest{}, err
	}
	m := ShardManifest{Format: shardFormat, Classes: o.Classes, Shape: o.Shape, Source: o.Source, Samples: n}
	var order []int
	if o.Shuffle {
		order = rand.New(rand.NewPCG(o.Seed, 0x5348415244)).Perm(n)
		m.Order = fmt.Sprintf("shuffled (seed %d)", o.Seed)
	}
	var (
		f     *os.File
		bw    *bufio.Writer
		tw    *tar.Writer
		h     hash.Hash
		cur   ShardEntry
		size  int64
		tmp   string
		since = time.Now()
	)
	closeShard := func() error {
		if tw == nil {
			return nil
		}
		err := errors.Join(tw.Close(), bw.Flush())
		if err == nil {
			err = errors.Join(f.Chmod(0o644), f.Sync())
		}
		err = errors.Join(err, f.Close())
		tw = nil
		if err != nil {
			return err
		}
		cur.Bytes, cur.SHA256 = size, hex.EncodeToString(h.Sum(nil))
		if err := os.Rename(tmp, filepath.Join(o.Dir, cur.Name)); err != nil {
			return err
		}
		m.Shards = append(m.Shards, cur)
		return nil
	}
	defer func() {
		if tw != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	for j := range n {
		if err := ctx.Err(); err != nil {
			return ShardManifest{}, err
		}
		i := j
		if order != nil {
			i = order[j]
		}
		s, err := sample(i)
		if err != nil {
			return ShardManifest{}, err
		}
		if err := checkSample(s); err != nil {
			return ShardManifest{}, fmt.Errorf("sample %d: %w", i, err)
		}
		need := int64(0)
		for _, fl := range s.Fields {
			need += 512 + (int64(len(fl.Data))+511)/512*512
		}
		if tw != nil && size+need+1024 > o.MaxBytes { // 1024: the end-of-archive blocks
			if err := closeShard(); err != nil {
				return ShardManifest{}, err
			}
		}
		if tw == nil {
			cur = ShardEntry{Name: fmt.Sprintf("%s-%06d.tar", o.Prefix, len(m.Shards))}
			if f, err = os.CreateTemp(o.Dir, "."+cur.Name+".tmp-*"); err != nil {
				return ShardManifest{}, err
			}
			tmp, h, size = f.Name(), sha256.New(), 0
			bw = bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
			tw = tar.NewWriter(io.MultiWriter(bw, (*counter)(&size)))
		}
		for _, fl := range s.Fields {
			hdr := &tar.Header{Name: s.Key + "." + fl.Ext, Mode: 0o644, Size: int64(len(fl.Data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
			if len(hdr.Name) <= 100 {
				hdr.Format = tar.FormatUSTAR
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return ShardManifest{}, err
			}
			if _, err := tw.Write(fl.Data); err != nil {
				return ShardManifest{}, err
			}
		}
		cur.Samples++
		if o.Progress != nil && (time.Since(since) > 5*time.Second || j == n-1) {
			o.Progress(j+1, n)
			since = time.Now()
		}
	}
	if err := closeShard(); err != nil {
		return ShardManifest{}, err
	}
	m.Pattern = fmt.Sprintf("%s-{%06d..%06d}.tar", o.Prefix, 0, len(m.Shards)-1)
	m.Created = time.Now().UTC().Truncate(time.Second)
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := atomicfile.WriteBytes(filepath.Join(o.Dir, ShardManifestName), append(b, '\n'), 0o644); err != nil {
		return ShardManifest{}, err
	}
	return m, nil
}

type counter int64

func (c *counter) Write(b []byte) (int, error) { *c += counter(len(b)); return len(b), nil }

// checkSample refuses keys and fields a reader would split differently.
func checkSample(s ShardSample) error {
	if s.Key == "" || strings.Contains(path.Base(s.Key), ".") || strings.HasPrefix(s.Key, "/") || strings.Contains(s.Key, "..") {
		return fmt.Errorf("key %q: want a non-empty relative path whose last part has no \".\"", s.Key)
	}
	if len(s.Fields) == 0 {
		return fmt.Errorf("key %q has no fields", s.Key)
	}
	seen := map[string]bool{}
	for _, f := range s.Fields {
		if f.Ext == "" || strings.ContainsAny(f.Ext, "/") || seen[f.Ext] {
			return fmt.Errorf("key %q: field %q is empty, has a \"/\" or comes twice", s.Key, f.Ext)
		}
		seen[f.Ext] = true
	}
	return nil
}

// ExpandBraces lists the names of a brace pattern:
// "train-{000000..000002}.tar" gives train-000000.tar, train-000001.tar and
// train-000002.tar (the width of the first number kept); several ranges
// multiply; a name without braces is itself.
func ExpandBraces(pattern string) ([]string, error) {
	loc := braceRange.FindStringSubmatchIndex(pattern)
	if loc == nil {
		if strings.ContainsAny(pattern, "{}") {
			return nil, fmt.Errorf("%q: a brace that is not a range {A..B} of numbers", pattern)
		}
		return []string{pattern}, nil
	}
	a, b := pattern[loc[2]:loc[3]], pattern[loc[4]:loc[5]]
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || hi < lo || hi-lo > 1e7 {
		return nil, fmt.Errorf("%q: the range {%s..%s} must go up, by at most 10 million", pattern, a, b)
	}
	rest, err := ExpandBraces(pattern[loc[1]:])
	if err != nil {
		return nil, err
	}
	var out []string
	for i := lo; i <= hi; i++ {
		for _, r := range rest {
			out = append(out, fmt.Sprintf("%s%0*d%s", pattern[:loc[0]], len(a), i, r))
		}
	}
	return out, nil
}

var braceRange = regexp.MustCompile(`\{(\d+)\.\.(\d+)\}`)

// MaxShardMember is the largest member a ShardReader reads (a damaged size
// field would otherwise allocate whatever it says).
const MaxShardMember = 256 << 20

// ShardReader reads the samples of one shard in order.
type ShardReader struct {
	name    string
	cr      *countingReader
	tr      *tar.Reader
	pending *tar.Header // a member read ahead: the next sample's first
	pendOff int64
	done    bool
}

// NewShardReader reads the shard r, named name in its errors.
func NewShardReader(name string, r io.Reader) *ShardReader {
	cr := &countingReader{r: bufio.NewReaderSize(r, 1<<20)}
	return &ShardReader{name: name, cr: cr, tr: tar.NewReader(cr)}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// next reads the next regular member's header, with the offset of its
// header; io.EOF at the end of the archive.
func (r *ShardReader) next() (*tar.Header, int64, error) {
	for {
		off := (r.cr.n + 511) / 512 * 512 // the previous member's padding is read lazily
		h, err := r.tr.Next()
		switch {
		case err == io.EOF:
			if r.cr.n == 0 {
				return nil, 0, fmt.Errorf("shard %s: empty file, not a tar archive", r.name)
			}
			return nil, off, io.EOF
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, off, fmt.Errorf("shard %s: truncated at byte %d (inside a member's header or the previous member's data)", r.name, r.cr.n)
		case err != nil:
			return nil, off, fmt.Errorf("shard %s: corrupt at byte %d: %v", r.name, off, err)
		}
		if h.Typeflag == tar.TypeReg {
			return h, off, nil
		}
	}
}

// Next returns the next sample, or io.EOF after the last. A damaged shard
// is an error naming the shard and the byte offset where it fails.
func (r *ShardReader) Next() (ShardSample, error) {
	if r.done {
		return ShardSample{}, io.EOF
	}
	var s ShardSample
	for {
		h, off := r.pending, r.pendOff
		r.pending = nil
		if h == nil {
			var err error
			if h, off, err = r.next(); err != nil {
				if err == io.EOF {
					r.done = true
					if s.Key != "" {
						return s, nil
					}
				}
				return ShardSample{}, err
			}
		}
		key, ext := splitMember(h.Name)
		if s.Key != "" && key != s.Key {
			r.pending, r.pendOff = h, off
			return s, nil
		}
		if ext == "" {
			return ShardSample{}, fmt.Errorf("shard %s: member %s at byte %d has no extension to name its field", r.name, h.Name, off)
		}
		if h.Size < 0 || h.Size > MaxShardMember {
			return ShardSample{}, fmt.Errorf("shard %s: member %s at byte %d claims %d bytes (at most %d)", r.name, h.Name, off, h.Size, MaxShardMember)
		}
		if _, dup := s.Field(ext); dup {
			return ShardSample{}, fmt.Errorf("shard %s: sample %s has two %s members (the second at byte %d)", r.name, key, ext, off)
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(r.tr, data); err != nil {
			return ShardSample{}, fmt.Errorf("shard %s: truncated in member %s (header at byte %d)", r.name, h.Name, off)
		}
		if s.Key == "" {
			s = ShardSample{Key: key, Shard: r.name, Offset: off}
		}
		s.Fields = append(s.Fields, ShardField{Ext: ext, Data: data})
	}
}

// splitMember splits a member's name into key and field: up to and after
// the first "." of its file name.
func splitMember(name string) (key, ext string) {
	dir, file := path.Split(name)
	if i := strings.IndexByte(file, '.'); i >= 0 {
		return dir + file[:i], file[i+1:]
	}
	return name, ""
}

// ShardImage decodes a sample's image (jpg, jpeg or png field) and its
// label (cls field, -1 without one) into channels (1 or 3); a JPEG at the
// smallest of libjpeg-turbo's scales keeping both sides at least 128
// pixels (ShardImageAt chooses).
func ShardImage(s ShardSample, channels int) (Image, int, error) {
	return ShardImageAt(s, channels, reducedSide)
}

// ShardImageAt is ShardImage decoding a JPEG to sides of at least minSide
// (0: full size).
func ShardImageAt(s ShardSample, channels, minSide int) (Image, int, error) {
	var b []byte
	for _, ext := range []string{"jpg", "jpeg", "png"} {
		if d, ok := s.Field(ext); ok {
			b = d
			break
		}
	}
	if b == nil {
		return Image{}, 0, fmt.Errorf("shard %s: sample %s (byte %d) has no jpg or png field", s.Shard, s.Key, s.Offset)
	}
	img, err := decodeImage(b, channels, minSide)
	if err != nil {
		return Image{}, 0, fmt.Errorf("shard %s: sample %s (byte %d): unreadable image: %v", s.Shard, s.Key, s.Offset, err)
	}
	label := -1
	if c, ok := s.Field("cls"); ok {
		if label, err = strconv.Atoi(strings.TrimSpace(string(c))); err != nil || label < 0 {
			return Image{}, 0, fmt.Errorf("shard %s: sample %s (byte %d): class %q is not a number from 0", s.Shard, s.Key, s.Offset, c)
		}
	}
	return img, label, nil
}

// ShardsFromDataset writes every image of ds as shards: the files
// themselves for a folder of images (JPEG bytes stay JPEG), PNG for the
// built-in datasets, with KEY.cls when labelled. Keys are the images'
// numbers in the dataset's order, zero-padded, whatever order o.Shuffle
// writes the samples in.
func ShardsFromDataset(ctx context.Context, ds Dataset, o ShardWriterOptions) (ShardManifest, error) {
	fold, _ := ds.(*folder)
	if o.Classes == nil {
		o.Classes = ds.Classes()
	}
	if o.Shape == nil && fold == nil {
		s := ds.Shape()
		o.Shape = &s
	}
	sample := func(i int) (ShardSample, error) {
		s := ShardSample{Key: fmt.Sprintf("%09d", i)}
		label := -1
		if fold != nil {
			b, err := os.ReadFile(fold.files[i])
			if err != nil {
				return s, err
			}
			ext := strings.TrimPrefix(strings.ToLower(filepath.Ext(fold.files[i])), ".")
			if ext == "jpeg" {
				ext = "jpg"
			}
			s.Fields = append(s.Fields, ShardField{Ext: ext, Data: b})
			if fold.labels != nil {
				label = fold.labels[i]
			}
		} else {
			img, l, err := ds.Image(i)
			if err != nil {
				return s, err
			}
			var buf bytes.Buffer
			if err := png.Encode(&buf, img.ToGoImage()); err != nil {
				return s, err
			}
			s.Fields = append(s.Fields, ShardField{Ext: "png", Data: buf.Bytes()})
			label = l
		}
		if label >= 0 {
			s.Fields = append(s.Fields, ShardField{Ext: "cls", Data: []byte(strconv.Itoa(label))})
		}
		return s, nil
	}
	return WriteShards(ctx, ds.Len(), sample, o)
}

// ReadShardManifest reads dir's manifest and checks that its shards are
// there with the sizes it records (their checksums: VerifyShards).
func ReadShardManifest(dir string) (ShardManifest, error) {
	var m ShardManifest
	b, err := os.ReadFile(filepath.Join(dir, ShardManifestName))
	if err != nil {
		return m, fmt.Errorf("shards %s: %w (dimtorch data shard writes it)", dir, err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Format != shardFormat {
		return m, fmt.Errorf("shards %s: %s is not a dimtorch shard manifest (format %q, %v)", dir, ShardManifestName, m.Format, err)
	}
	total := 0
	for _, s := range m.Shards {
		st, err := os.Stat(filepath.Join(dir, s.Name))
		if err != nil {
			return m, fmt.Errorf("shards %s: %w", dir, err)
		}
		if st.Size() != s.Bytes {
			return m, fmt.Errorf("shards %s: %s has %d bytes, the manifest says %d", dir, s.Name, st.Size(), s.Bytes)
		}
		total += s.Samples
	}
	if total != m.Samples || len(m.Shards) == 0 {
		return m, fmt.Errorf("shards %s: the manifest's shards hold %d samples, it says %d", dir, total, m.Samples)
	}
	return m, nil
}

// VerifyShards checks every shard's SHA-256 against the manifest.
func VerifyShards(dir string, m ShardManifest) error {
	for _, s := range m.Shards {
		f, err := os.Open(filepath.Join(dir, s.Name))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("shard %s: %w", s.Name, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != s.SHA256 {
			return fmt.Errorf("shard %s is damaged: its SHA-256 is not the manifest's", s.Name)
		}
	}
	return nil
}

// ToGoImage converts an 8-bit CHW image (1 or 3 channels) to an
// image.Gray or image.NRGBA.
func (m Image) ToGoImage() image.Image {
	plane := m.H * m.W
	if m.C == 1 {
		g := image.NewGray(image.Rect(0, 0, m.W, m.H))
		copy(g.Pix, m.Pix[:plane])
		return g
	}
	c := image.NewNRGBA(image.Rect(0, 0, m.W, m.H))
	for i := range plane {
		c.Pix[4*i], c.Pix[4*i+1], c.Pix[4*i+2], c.Pix[4*i+3] = m.Pix[i], m.Pix[plane+i], m.Pix[2*plane+i], 255
	}
	return c
}

package datasets

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func randomSamples(n int, seed uint64) []ShardSample {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]ShardSample, n)
	for i := range out {
		img := make([]byte, 100+r.IntN(3000))
		for j := range img {
			img[j] = byte(r.Uint32())
		}
		s := ShardSample{Key: fmt.Sprintf("dir%d/%06d", i%3, i), Fields: []ShardField{{"jpg", img}, {"cls", []byte(fmt.Sprint(r.IntN(10)))}}}
		if i%4 == 0 {
			s.Fields = append(s.Fields, ShardField{"json", []byte(`{"i":` + fmt.Sprint(i) + `}`)})
		}
		if i%7 == 0 {
			s.Fields = append(s.Fields, ShardField{"seg.png", nil}) // an empty member, a dotted field
		}
		out[i] = s
	}
	return out
}

func readAllShards(t *testing.T, dir string, m ShardManifest) []ShardSample {
	t.Helper()
	names, err := ExpandBraces(m.Pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != len(m.Shards) {
		t.Fatalf("pattern %s lists %d shards, the manifest %d", m.Pattern, len(names), len(m.Shards))
	}
	var all []ShardSample
	for i, name := range names {
		if name != m.Shards[i].Name {
			t.Fatalf("shard %d: %s in the pattern, %s in the manifest", i, name, m.Shards[i].Name)
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		r := NewShardReader(name, f)
		n := 0
		for {
			s, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, s)
			n++
		}
		f.Close()
		if n != m.Shards[i].Samples {
			t.Fatalf("%s: read %d samples, the manifest says %d", name, n, m.Shards[i].Samples)
		}
	}
	return all
}

// Samples written to shards read back bit for bit, keys, fields and order,
// across several shards of bounded size; the manifest's counts and
// checksums hold; the same samples give the same bytes.
func TestShardsRoundTrip(t *testing.T) {
	want := randomSamples(200, 1)
	dirs := []string{t.TempDir(), t.TempDir()}
	var ms []ShardManifest
	for _, dir := range dirs {
		m, err := WriteShards(context.Background(), len(want), func(i int) (ShardSample, error) { return want[i], nil },
			ShardWriterOptions{Dir: dir, MaxBytes: 64 << 10, Classes: []string{"a", "b"}, Source: "test"})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	m := ms[0]
	if len(m.Shards) < 4 || m.Samples != 200 || m.Pattern != fmt.Sprintf("train-{000000..%06d}.tar", len(m.Shards)-1) {
		t.Fatalf("manifest %+v", m)
	}
	for _, s := range m.Shards {
		if s.Bytes > 64<<10 {
			t.Fatalf("%s has %d bytes, over the 64 KiB asked", s.Name, s.Bytes)
		}
		a, _ := os.ReadFile(filepath.Join(dirs[0], s.Name))
		b, _ := os.ReadFile(filepath.Join(dirs[1], s.Name))
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs between two writes of the same samples", s.Name)
		}
	}
	got := readAllShards(t, dirs[0], m)
	if len(got) != len(want) {
		t.Fatalf("%d samples back, %d written", len(got), len(want))
	}
	for i := range want {
		g := got[i]
		if g.Key != want[i].Key || len(g.Fields) != len(want[i].Fields) {
			t.Fatalf("sample %d: %s with %d fields, wrote %s with %d", i, g.Key, len(g.Fields), want[i].Key, len(want[i].Fields))
		}
		for j, f := range want[i].Fields {
			if g.Fields[j].Ext != f.Ext || !bytes.Equal(g.Fields[j].Data, f.Data) {
				t.Fatalf("sample %d field %d: %s (%d bytes), wrote %s (%d bytes)", i, j, g.Fields[j].Ext, len(g.Fields[j].Data), f.Ext, len(f.Data))
			}
		}
	}
	back, err := ReadShardManifest(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyShards(dirs[0], back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Classes, []string{"a", "b"}) {
		t.Fatalf("classes %v", back.Classes)
	}
	left, _ := filepath.Glob(filepath.Join(dirs[0], ".*"))
	if len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// A built-in dataset's images go in as PNG and decode to the same pixels
// and labels; a folder's JPEG files go in as their own bytes.
func TestShardsFromDatasets(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	pix := make([]uint8, 30*3*5*7)
	for i := range pix {
		pix[i] = uint8(r.Uint32())
	}
	labels := make([]int, 30)
	for i := range labels {
		labels[i] = i % 4
	}
	for _, c := range []int{1, 3} {
		ds := &memory{shape: Shape{C: c, H: 5, W: 7}, pix: pix[:30*c*35], labels: labels, classes: []string{"w", "x", "y", "z"}}
		dir := t.TempDir()
		m, err := ShardsFromDataset(context.Background(), ds, ShardWriterOptions{Dir: dir, Prefix: "fm"})
		if err != nil {
			t.Fatal(err)
		}
		if m.Shape == nil || *m.Shape != ds.shape || len(m.Classes) != 4 {
			t.Fatalf("manifest %+v", m)
		}
		for i, s := range readAllShards(t, dir, m) {
			img, label, err := ShardImage(s, c)
			if err != nil {
				t.Fatal(err)
			}
			want, wl, _ := ds.Image(i)
			if label != wl || !bytes.Equal(img.Pix, want.Pix) {
				t.Fatalf("%d channels, image %d: label %d (want %d), pixels equal %v", c, i, label, wl, bytes.Equal(img.Pix, want.Pix))
			}
		}
	}

	root := t.TempDir()
	files := map[string][]byte{}
	for i, p := range []string{"cat/1.jpg", "cat/2.jpeg", "dog/3.jpg"} {
		img := image.NewRGBA(image.Rect(0, 0, 8, 6))
		for j := range img.Pix {
			img.Pix[j] = uint8(j * (i + 1))
		}
		img.Set(0, 0, color.RGBA{1, 2, 3, 255})
		var b bytes.Buffer
		jpeg.Encode(&b, img, nil)
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), b.Bytes(), 0o644)
		files[p] = b.Bytes()
	}
	ds, err := OpenFolder(root, "train")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	m, err := ShardsFromDataset(context.Background(), ds, ShardWriterOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	got := readAllShards(t, dir, m)
	for i, p := range []string{"cat/1.jpg", "cat/2.jpeg", "dog/3.jpg"} {
		b, ok := got[i].Field("jpg")
		cls, _ := got[i].Field("cls")
		if !ok || !bytes.Equal(b, files[p]) || string(cls) != fmt.Sprint(map[bool]int{true: 0, false: 1}[i < 2]) {
			t.Fatalf("sample %d (%s): jpg %v, equal %v, cls %q", i, p, ok, bytes.Equal(b, files[p]), cls)
		}
	}
}

// Written shuffled, a dataset stored class by class comes back as every
// sample once, each with its own key, label and pixels, in an order that
// depends on the seed alone, with the classes mixed from the first shard.
func TestShardsShuffled(t *testing.T) {
	const n = 200
	pix := make([]uint8, n*4)
	labels := make([]int, n)
	for i := range labels {
		labels[i] = i * 4 / n // four classes, one after another
		pix[4*i], pix[4*i+1] = uint8(i), uint8(i>>8)
	}
	ds := &memory{shape: Shape{C: 1, H: 2, W: 2}, pix: pix, labels: labels, classes: []string{"a", "b", "c", "d"}}
	write := func(seed uint64) (ShardManifest, []ShardSample) {
		dir := t.TempDir()
		m, err := ShardsFromDataset(context.Background(), ds, ShardWriterOptions{Dir: dir, MaxBytes: 16 << 10, Shuffle: true, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return m, readAllShards(t, dir, m)
	}
	m, got := write(7)
	if m.Order != "shuffled (seed 7)" || len(got) != n || len(m.Shards) < 2 {
		t.Fatalf("manifest order %q, %d samples in %d shards", m.Order, len(got), len(m.Shards))
	}
	seen := map[int]bool{}
	inFirst := map[int]bool{}
	moved := 0
	for j, s := range got {
		i, err := strconv.Atoi(s.Key)
		if err != nil || seen[i] {
			t.Fatalf("sample %d: key %q (repeated: %v)", j, s.Key, seen[i])
		}
		seen[i] = true
		img, label, err := ShardImage(s, 1)
		want, wl, _ := ds.Image(i)
		if err != nil || label != wl || !bytes.Equal(img.Pix, want.Pix) {
			t.Fatalf("sample %d (key %d): label %d want %d, pixels equal %v, %v", j, i, label, wl, bytes.Equal(img.Pix, want.Pix), err)
		}
		if i != j {
			moved++
		}
		if j < m.Shards[0].Samples {
			inFirst[label] = true
		}
	}
	if moved < n/2 || len(inFirst) != 4 {
		t.Fatalf("%d of %d samples moved, classes in the first shard %v", moved, n, inFirst)
	}
	_, again := write(7)
	_, other := write(8)
	same, differ := true, false
	for j := range got {
		same = same && again[j].Key == got[j].Key
		differ = differ || other[j].Key != got[j].Key
	}
	if !same || !differ {
		t.Fatalf("the same seed gives the same order: %v; another seed another: %v", same, differ)
	}
}

// A damaged shard is an error that names the shard and the byte where it
// fails, never a silent skip or a hang.
func TestShardsDamaged(t *testing.T) {
	want := randomSamples(20, 3)
	dir := t.TempDir()
	m, err := WriteShards(context.Background(), len(want), func(i int) (ShardSample, error) { return want[i], nil }, ShardWriterOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, m.Shards[0].Name))
	all := readAllShards(t, dir, m)
	s5 := all[5].Offset // the header of sample 5's first member
	read := func(b []byte) error {
		r := NewShardReader("x.tar", bytes.NewReader(b))
		for {
			if _, err := r.Next(); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	}
	corrupt := append([]byte(nil), good...)
	corrupt[s5+148] ^= 0x55 // the header's checksum
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"header":        {corrupt, fmt.Sprintf("shard x.tar: corrupt at byte %d", s5)},
		"cut in data":   {good[:s5+512+10], "shard x.tar: truncated in member dir2/000005.jpg"},
		"cut in header": {good[:s5+100], "shard x.tar: truncated at byte"},
		"empty":         {nil, "shard x.tar: empty file"},
		"not a tar":     {bytes.Repeat([]byte("JFIF"), 300), "shard x.tar: corrupt at byte 0"},
	} {
		if err := read(c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
	os.WriteFile(filepath.Join(dir, m.Shards[0].Name), corrupt, 0o644)
	if err := VerifyShards(dir, m); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Errorf("verify a damaged shard: %v", err)
	}
	os.WriteFile(filepath.Join(dir, m.Shards[0].Name), good[:len(good)-512], 0o644)
	if _, err := ReadShardManifest(dir); err == nil || !strings.Contains(err.Error(), "the manifest says") {
		t.Errorf("a shorter shard: %v", err)
	}
}

func TestShardWriterRefusesAndCancels(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []ShardSample{
		{Key: "a.b", Fields: []ShardField{{"jpg", nil}}},
		{Key: "", Fields: []ShardField{{"jpg", nil}}},
		{Key: "../x", Fields: []ShardField{{"jpg", nil}}},
		{Key: "k"},
		{Key: "k", Fields: []ShardField{{"jpg", nil}, {"jpg", nil}}},
	} {
		if _, err := WriteShards(context.Background(), 1, func(int) (ShardSample, error) { return s, nil }, ShardWriterOptions{Dir: dir}); err == nil {
			t.Errorf("sample %+v written", s)
		}
	}
	want := randomSamples(50, 4)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := WriteShards(ctx, 50, func(i int) (ShardSample, error) {
		if i == 30 {
			cancel()
		}
		return want[i], nil
	}, ShardWriterOptions{Dir: dir, MaxBytes: 32 << 10})
	if err != context.Canceled {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ShardManifestName)); !os.IsNotExist(err) {
		t.Fatal("a manifest after an interrupted write")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestExpandBraces(t *testing.T) {
	for pattern, want := range map[string][]string{
		"train-{000000..000002}.tar": {"train-000000.tar", "train-000001.tar", "train-000002.tar"},
		"a.tar":                      {"a.tar"},
		"s{1..2}-{08..09}.tar":       {"s1-08.tar", "s1-09.tar", "s2-08.tar", "s2-09.tar"},
	} {
		got, err := ExpandBraces(pattern)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v %v, want %v", pattern, got, err, want)
		}
	}
	for _, bad := range []string{"x-{3..1}.tar", "x-{a..b}.tar", "x-{1,2}.tar", "x-{0..99999999}.tar"} {
		if _, err := ExpandBraces(bad); err == nil {
			t.Errorf("%s expanded", bad)
		}
	}
}

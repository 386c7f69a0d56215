package embed_test

import (
	"errors"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/embed"
	"github.com/dimtorch/dimtorch/export"
	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/internal/onnxsum"
	"github.com/dimtorch/dimtorch/internal/testref"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
	"google.golang.org/protobuf/proto"
)

// exportedFrom writes encoder name, randomly initialised (seed 7), as
// trained on data.
func exportedFrom(t *testing.T, name string, ch int, data string) string {
	t.Helper()
	testref.NeedORT(t)
	_ = torch.ManualSeed(7)
	enc, err := models.New(models.Config{Name: name, InChannels: ch})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	enc.Train(false)
	m, err := export.Model(enc, export.Options{Data: data})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+".onnx")
	if err := export.Write(p, m); err != nil {
		t.Fatal(err)
	}
	return p
}

// withMetadata copies the model at path with its metadata entry key set to
// value, or removed when value is nil; with reseal, its checksums are
// recorded again (as a writer of that metadata would), else they are kept.
func withMetadata(t *testing.T, path, key string, value *string, reseal bool) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var props []*onnxpb.StringStringEntryProto
	found := false
	for _, p := range m.MetadataProps {
		if p.GetKey() == key {
			found = true
			if value == nil {
				continue
			}
			p.Value = proto.String(*value)
		}
		props = append(props, p)
	}
	if !found && value != nil {
		props = append(props, &onnxpb.StringStringEntryProto{Key: proto.String(key), Value: proto.String(*value)})
	}
	if value == nil && !found {
		t.Fatalf("%s has no metadata %q", path, key)
	}
	m.MetadataProps = props
	if reseal {
		if err := onnxsum.Seal(&m); err != nil {
			t.Fatal(err)
		}
	}
	b, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "edited.onnx")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// beforeRecord is the model at path as dimtorch exported it before the
// preprocessing record: without the record and without its checksum.
func beforeRecord(t *testing.T, path string) string {
	t.Helper()
	return withMetadata(t, withMetadata(t, path, embed.PreprocessingKey, nil, false), onnxsum.MetadataKey, nil, false)
}

// photo is a w x h colour image with some structure.
func photo(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(3*x + y), uint8(5 * y), uint8((x * y) % 251), 255})
		}
	}
	return img
}

// A model says how to feed it: the export records the preprocessing of its
// training data, Open reads it back, and Preprocess follows it, giving
// exactly what the datasets pipeline gives for the same data (a folder
// model: 64x64 first, then the input's 32x32).
func TestPreprocessingRoundTrip(t *testing.T) {
	p := exportedFrom(t, "dcgan32", 3, "folder:/photos")
	m, err := embed.Open(p, embed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	prep, recorded := m.Preprocessing()
	if !recorded {
		t.Fatal("the export's preprocessing was not found")
	}
	want := export.Preprocessing("folder:/photos", [3]int{3, 32, 32})
	if !reflect.DeepEqual(prep, want) || len(prep.Resize) != 2 || prep.Resize[0].Height != 64 {
		t.Fatalf("read %+v, want %+v", prep, want)
	}
	src := photo(97, 75)
	got, err := m.Preprocess(src)
	if err != nil {
		t.Fatal(err)
	}
	img := datasets.FromGoImage(src, 3)
	img = datasets.Compose(datasets.DefaultTransform("folder:/photos", datasets.Test), datasets.Resize(32, 32)).Apply(img, nil)
	if len(got) != len(img.Pix) {
		t.Fatalf("%d values, the datasets pipeline %d", len(got), len(img.Pix))
	}
	for i, v := range img.Pix {
		if got[i] != float32(v)/255 {
			t.Fatalf("value %d: %v, the datasets pipeline %v", i, got[i]*255, v)
		}
	}
}

// An export from before the record (no dimtorch.preprocessing entry) is fed
// as before, by the rule for its "data" entry: same preprocessing, same
// values, same embeddings as the same model with the record.
func TestExportWithoutRecordEmbedsIdentically(t *testing.T) {
	for _, data := range []string{"folder:/photos", "stl10", "cifar10", ""} {
		p := exportedFrom(t, "dcgan32", 3, data)
		old := beforeRecord(t, p)
		a, err := embed.Open(p, embed.Options{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		b, err := embed.Open(old, embed.Options{Threads: 1})
		if err != nil {
			a.Close()
			t.Fatalf("%q without the record: %v", data, err)
		}
		pa, ra := a.Preprocessing()
		pb, rb := b.Preprocessing()
		if !ra || rb || !reflect.DeepEqual(pa, pb) {
			t.Errorf("%q: recorded %v %+v, derived %v %+v", data, ra, pa, rb, pb)
		}
		var va, vb [][]float32
		for _, img := range []image.Image{photo(96, 96), photo(40, 50), photo(32, 32)} {
			xa, err := a.Preprocess(img)
			if err != nil {
				t.Fatal(err)
			}
			xb, err := b.Preprocess(img)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(xa, xb) {
				t.Fatalf("%q: the inputs differ", data)
			}
			ea, err := a.EmbedBatch(xa, 1)
			if err != nil {
				t.Fatal(err)
			}
			eb, err := b.EmbedBatch(xb, 1)
			if err != nil {
				t.Fatal(err)
			}
			va, vb = append(va, ea...), append(vb, eb...)
		}
		if !reflect.DeepEqual(va, vb) {
			t.Errorf("%q: the embeddings differ", data)
		}
		a.Close()
		b.Close()
	}
}

// A record that is malformed, newer, or for another input (as a writer
// could seal it) is refused at Open with ErrPreprocessing, naming the file
// and the entry; a record changed after the export (a flipped bit, an edit)
// is refused by its checksum, even where the change is a valid record.
func TestBadPreprocessingRecord(t *testing.T) {
	p := exportedFrom(t, "dcgan32", 3, "cifar10")
	other, _ := export.Preprocessing("cifar10", [3]int{3, 28, 28}).Marshal()
	cases := map[string]string{
		"not JSON":        "resize to 64x64 then 32x32",
		"newer":           `{"version":2,"channels":3,"height":32,"width":32}`,
		"another input":   other,
		"misspelt field":  strings.Replace(mustRecord(t, p), `"range"`, `"rnage"`, 1),
		"bad range":       strings.Replace(mustRecord(t, p), `"range":[0,1]`, `"range":[1,1]`, 1),
		"gray for colour": strings.Replace(mustRecord(t, p), `"rgb"`, `"gray"`, 1),
	}
	for name, v := range cases {
		bad := withMetadata(t, p, embed.PreprocessingKey, &v, true)
		m, err := embed.Open(bad, embed.Options{})
		if err == nil {
			m.Close()
			t.Errorf("%s: opened", name)
			continue
		}
		if !errors.Is(err, embed.ErrPreprocessing) || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), embed.PreprocessingKey) {
			t.Errorf("%s: %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	valid := strings.Replace(mustRecord(t, p), `"range":[0,1]`, `"range":[0,2]`, 1)
	for name, bad := range map[string]string{
		"edited":  withMetadata(t, p, embed.PreprocessingKey, &valid, false),
		"removed": withMetadata(t, p, embed.PreprocessingKey, nil, false),
	} {
		m, err := embed.Open(bad, embed.Options{})
		if err == nil {
			m.Close()
			t.Errorf("%s record: opened", name)
			continue
		}
		if !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "checksum of the metadata") {
			t.Errorf("%s record: %v", name, err)
		}
	}
}

func mustRecord(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, p := range m.MetadataProps {
		if p.GetKey() == embed.PreprocessingKey {
			return p.GetValue()
		}
	}
	t.Fatalf("%s has no preprocessing record", path)
	return ""
}

// The reader follows what the record says, beyond what dimtorch's own
// exports say: another value range, and a mean and std per channel, in
// Preprocess and Pixels alike.
func TestPreprocessingFollowsRange(t *testing.T) {
	p := exportedFrom(t, "dcgan32", 3, "cifar10")
	rec := strings.Replace(mustRecord(t, p), `"range":[0,1]`, `"range":[-1,1],"mean":[0.5,0,-0.5],"std":[2,1,0.5]`, 1)
	unit, err := embed.Open(p, embed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer unit.Close()
	m, err := embed.Open(withMetadata(t, p, embed.PreprocessingKey, &rec, true), embed.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mean, std := []float64{0.5, 0, -0.5}, []float64{2, 1, 0.5}
	check := func(what string, u, got []float32) {
		t.Helper()
		for i := range u {
			c := i / (32 * 32)
			want := ((-1 + 2*float64(u[i])) - mean[c]) / std[c]
			if math.Abs(float64(got[i])-want) > 1e-5 {
				t.Fatalf("%s value %d: %v, want %v", what, i, got[i], want)
			}
		}
	}
	src := photo(50, 40)
	u, _ := unit.Preprocess(src)
	got, err := m.Preprocess(src)
	if err != nil {
		t.Fatal(err)
	}
	check("Preprocess", u, got)
	exact := photo(32, 32)
	u, _ = unit.Pixels(exact)
	got, err = m.Pixels(exact)
	if err != nil {
		t.Fatal(err)
	}
	check("Pixels", u, got)
}

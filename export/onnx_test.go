package export

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/export/onnxpb"
	"github.com/dimtorch/dimtorch/internal/onnxsum"
	"github.com/dimtorch/dimtorch/internal/preproc"
	"github.com/dimtorch/dimtorch/internal/testref"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Every encoder exports to a model that the ONNX checker accepts with
// full_check (shape inference included), with every output declared.
func TestExportPassesONNXChecker(t *testing.T) {
	testref.NeedPython(t, "onnx", "python3-onnx")
	dir := t.TempDir()
	for _, name := range models.Names() {
		t.Run(name, func(t *testing.T) {
			enc, err := models.New(models.Config{Name: name, InChannels: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer nn.Free(enc)
			enc.Train(false)
			m, err := Model(enc, Options{Outputs: []string{"y", "fc", "conv", "local"}, Metadata: map[string]string{"encoder": name}, ProducerVersion: "test"})
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, name+".onnx")
			if err := Write(p, m); err != nil {
				t.Fatal(err)
			}
			script := fmt.Sprintf(`
import onnx
m = onnx.load(%q)
onnx.checker.check_model(m, full_check=True)
inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
outs = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in inferred.graph.output}
assert set(outs) == {"y", "fc", "conv", "local"}, outs
assert m.opset_import[0].version == 13
md = {p.key: p.value for p in m.metadata_props}
assert md["encoder"] == %q
import json
pre = json.loads(md["dimtorch.preprocessing"])
dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
assert pre["version"] == 1 and [pre["channels"], pre["height"], pre["width"]] == dims[1:], (pre, dims)
assert pre["resize"][-1] == {"height": dims[2], "width": dims[3]} and pre["range"] == [0, 1], pre
`, p, name)
			if out, err := exec.Command("/usr/bin/python3", "-c", script).CombinedOutput(); err != nil {
				t.Fatalf("ONNX checker: %v\n%s", err, out)
			}
		})
	}
}

// metadata returns a model's metadata_props as a map.
func metadata(m *onnxpb.ModelProto) map[string]string {
	out := map[string]string{}
	for _, p := range m.GetMetadataProps() {
		out[p.GetKey()] = p.GetValue()
	}
	return out
}

// The model records how to feed it, from the training data's name by the
// rule training follows (preproc.For): a folder-trained 28x28 model takes
// its images through 64x64; its int8 form records the same; the exporter's
// own entries cannot be overridden through Metadata.
func TestModelRecordsPreprocessing(t *testing.T) {
	enc, err := models.New(models.Config{Name: "basic28", InChannels: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer nn.Free(enc)
	enc.Train(false)
	m, err := Model(enc, Options{Data: "folder:/photos", Metadata: map[string]string{"encoder": "basic28"}})
	if err != nil {
		t.Fatal(err)
	}
	md := metadata(m)
	if md["data"] != "folder:/photos" || md["encoder"] != "basic28" {
		t.Fatalf("metadata %v", md)
	}
	got, err := preproc.Parse(md[preproc.Key])
	if err != nil {
		t.Fatal(err)
	}
	want := Preprocessing("folder:/photos", [3]int{1, 28, 28})
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(got.Resize, []preproc.Size{{Height: 64, Width: 64}, {Height: 28, Width: 28}}) || got.Color != preproc.Gray || !got.Unit() {
		t.Fatalf("recorded %+v, want %+v", got, want)
	}
	// Without the data's name: straight to the input size, and no "data".
	plain, err := Model(enc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := preproc.Parse(metadata(plain)[preproc.Key]); err != nil || !reflect.DeepEqual(p.Resize, []preproc.Size{{Height: 28, Width: 28}}) {
		t.Fatalf("no data: %+v %v", p, err)
	}
	if _, ok := metadata(plain)["data"]; ok {
		t.Fatal("a \"data\" entry without Options.Data")
	}
	// The int8 form keeps the record (and the checksum still covers the graph only).
	ranges := map[string]Range{}
	for _, v := range CalibrationValues(m) {
		ranges[v] = Range{-1, 1}
	}
	q, err := Quantize(m, ranges, "test ranges")
	if err != nil {
		t.Fatal(err)
	}
	if metadata(q)[preproc.Key] != md[preproc.Key] {
		t.Fatalf("int8: %q, float: %q", metadata(q)[preproc.Key], md[preproc.Key])
	}
	for _, k := range []string{"data", preproc.Key, onnxsum.Key, onnxsum.MetadataKey} {
		if _, err := Model(enc, Options{Metadata: map[string]string{k: "x"}}); err == nil || !strings.Contains(err.Error(), "written by the exporter") {
			t.Errorf("Metadata[%q]: %v", k, err)
		}
	}
}

// InputValues is the inverse of the graph's first nodes: the loader's
// [-1, 1] back to the [0, 1] an exported model takes.
func TestInputValues(t *testing.T) {
	x := torch.FromSlice([]float32{-1, 0, 1, 0.5}, []int64{1, 4})
	v, err := InputValues(x)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v, []float32{0, 0.5, 1, 0.75}) {
		t.Fatalf("%v", v)
	}
}

package export

import (
	"fmt"
	"github.com/dimtorch/dimtorch/internal/testref"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dimtorch/dimtorch/models"
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
assert {p.key: p.value for p in m.metadata_props}["encoder"] == %q
`, p, name)
			if out, err := exec.Command("/usr/bin/python3", "-c", script).CombinedOutput(); err != nil {
				t.Fatalf("ONNX checker: %v\n%s", err, out)
			}
		})
	}
}

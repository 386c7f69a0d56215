package embed

import (
	"image"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/internal/preproc"
	"github.com/dimtorch/dimtorch/internal/testref"
	"google.golang.org/protobuf/proto"
)

// Models without any metadata (another exporter's) open with the
// preprocessing derived for unknown data (straight to the input size); a
// model of neither 1 nor 3 channels still embeds values, and images are a
// clear error for it (Pixels used to index out of range on 2 channels).
func TestOpenWithoutMetadata(t *testing.T) {
	testref.NeedORT(t)
	dir := t.TempDir()
	for _, c := range []int64{1, 2} {
		mp := flattenModel(tensorInfo("image", f32, -1, c, 4, 4), tensorInfo("y", f32, -1, c*16))
		b, err := proto.Marshal(mp)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "m.onnx")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Open(p, Options{})
		if err != nil {
			t.Fatalf("%d channels: %v", c, err)
		}
		prep, recorded := m.Preprocessing()
		if recorded || !reflect.DeepEqual(prep.Resize, []preproc.Size{{Height: 4, Width: 4}}) {
			t.Errorf("%d channels: %v %+v", c, recorded, prep)
		}
		if _, err := m.EmbedBatch(make([]float32, c*16), 1); err != nil {
			t.Errorf("%d channels: %v", c, err)
		}
		_, perr := m.Preprocess(image.NewGray(image.Rect(0, 0, 9, 9)))
		_, xerr := m.Pixels(image.NewRGBA(image.Rect(0, 0, 4, 4)))
		if c == 2 {
			if perr == nil || !strings.Contains(perr.Error(), "takes 2 channels") || xerr == nil {
				t.Errorf("2 channels: %v, %v", perr, xerr)
			}
		} else if perr != nil {
			t.Errorf("1 channel: %v", perr)
		}
		m.Close()
	}
}

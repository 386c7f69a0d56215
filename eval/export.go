package eval

import (
	"os"
	"path/filepath"

	"github.com/dimtorch/dimtorch/internal/npy"
)

// ExportNPY writes DIR/{train,test}_FEATURE.npy (float32 [N, D]) and
// DIR/{train,test}_labels.npy (int64 [N]) for tools such as scikit-learn.
func ExportNPY(dir string, tr, te *Set) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for split, set := range map[string]*Set{"train": tr, "test": te} {
		for name, f := range set.Feats {
			v, err := f.Float32s()
			if err != nil {
				return err
			}
			if err := npy.WriteFloat32(filepath.Join(dir, split+"_"+name+".npy"), v, int(f.Size(0)), int(f.Size(1))); err != nil {
				return err
			}
		}
		l, err := set.Labels.Int64s()
		if err != nil {
			return err
		}
		if err := npy.WriteInt64(filepath.Join(dir, split+"_labels.npy"), l, len(l)); err != nil {
			return err
		}
	}
	return nil
}

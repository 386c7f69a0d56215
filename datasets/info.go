package datasets

import (
	"errors"
	"io"
)

// SplitInfo describes one split.
type SplitInfo struct {
	Split  Split `json:"split"`
	Images int   `json:"images"`
}

// Info describes a dataset as `dimtorch data info` reports it.
type Info struct {
	Name        string      `json:"name"`
	Dir         string      `json:"dir,omitempty"`
	Shape       Shape       `json:"shape"`
	Classes     []string    `json:"classes,omitempty"`
	NumClasses  int         `json:"num_classes"`
	Splits      []SplitInfo `json:"splits"`
	TrainImages int         `json:"train_images"`
	TestImages  int         `json:"test_images"`
}

// Describe opens every split of a dataset and reports its sizes, image shape
// and classes.
func Describe(name, dataDir string) (*Info, error) {
	splits, err := Splits(name, dataDir)
	if err != nil {
		return nil, err
	}
	info := &Info{Name: name}
	if s, err := lookup(name); err == nil {
		if dir, err := Locate(s, dataDir); err == nil {
			info.Dir = dir
		}
	}
	for _, sp := range splits {
		d, err := Open(name, sp, dataDir)
		if err != nil {
			return nil, err
		}
		info.Splits = append(info.Splits, SplitInfo{sp, d.Len()})
		switch sp {
		case Train:
			info.TrainImages = d.Len()
		case Test:
			info.TestImages = d.Len()
		}
		if info.Classes == nil {
			info.Classes = d.Classes()
			info.Shape = d.Shape()
		}
		Close(d)
	}
	info.NumClasses = len(info.Classes)
	return info, nil
}

// Close releases a dataset's open files, if it holds any.
func Close(d Dataset) error {
	if c, ok := d.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Close implements io.Closer.
func (d *stl10) Close() error {
	if d.f == nil {
		return errors.New("already closed")
	}
	err := d.f.Close()
	d.f = nil
	return err
}

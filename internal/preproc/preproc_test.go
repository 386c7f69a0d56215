package preproc

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// The size rule: STL-10 and folders go through 64x64 (unless that is the
// input), the native-size datasets straight to the input.
func TestFor(t *testing.T) {
	cases := []struct {
		data    string
		c, h, w int
		resize  []Size
		color   string
	}{
		{"fashion-mnist", 1, 28, 28, []Size{{28, 28}}, Gray},
		{"cifar10", 3, 32, 32, []Size{{32, 32}}, RGB},
		{"", 3, 32, 32, []Size{{32, 32}}, RGB},
		{"stl10", 3, 64, 64, []Size{{64, 64}}, RGB},
		{"stl10", 3, 32, 32, []Size{{64, 64}, {32, 32}}, RGB},
		{"STL10", 3, 32, 32, []Size{{64, 64}, {32, 32}}, RGB}, // names are case-insensitive, as datasets.Open's
		{"folder:/data/x", 1, 28, 28, []Size{{64, 64}, {28, 28}}, Gray},
		{"folderish", 1, 28, 28, []Size{{28, 28}}, Gray},
	}
	for _, c := range cases {
		s := For(c.data, c.c, c.h, c.w)
		if !reflect.DeepEqual(s.Resize, c.resize) || s.Color != c.color || s.Channels != c.c || s.Height != c.h || s.Width != c.w {
			t.Errorf("For(%q, %d, %d, %d) = %+v", c.data, c.c, c.h, c.w, s)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("For(%q): %v", c.data, err)
		}
		if !s.Unit() {
			t.Errorf("For(%q) does not feed v/255", c.data)
		}
	}
	if err := For("cifar10", 2, 32, 32).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a 2-channel spec validated: %v", err)
	}
}

// The record's JSON is pinned: it is a file format other programs read.
func TestMarshalParse(t *testing.T) {
	s := For("stl10", 3, 32, 32)
	v, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"channels":3,"height":32,"width":32,"color":"rgb","resize":[{"height":64,"width":64},{"height":32,"width":32}],` +
		`"resample":"bilinear","range":[0,1],"in_graph":"2x-1: the exported graph maps its input to the [-1, 1] the encoder was trained on"}`
	if v != want {
		t.Fatalf("JSON\n%s\nwant\n%s", v, want)
	}
	got, err := Parse(v)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("Parse: %+v %v, want %+v", got, err, s)
	}
	withStats := `{"version":1,"channels":1,"height":8,"width":8,"color":"gray","resize":[{"height":8,"width":8}],"resample":"bilinear","range":[-1,1],"mean":[0.5],"std":[0.25]}`
	got, err = Parse(withStats)
	if err != nil || got.Unit() || got.Mean[0] != 0.5 || got.Std[0] != 0.25 || got.Range[0] != -1 {
		t.Fatalf("with mean and std: %+v %v", got, err)
	}
}

// Every malformed record is an ErrInvalid naming what is wrong.
func TestParseRefuses(t *testing.T) {
	good := `"channels":3,"height":32,"width":32,"color":"rgb","resize":[{"height":32,"width":32}],"resample":"bilinear","range":[0,1]`
	cases := []struct{ name, json, says string }{
		{"not JSON", `resize 64 then 32`, "not the JSON"},
		{"two values", `{"version":1,` + good + `} {}`, "more than one"},
		{"unknown field", `{"version":1,` + good + `,"colour":"rgb"}`, "unknown field"},
		{"newer version", `{"version":2,` + good + `}`, "newer"},
		{"no version", `{` + good + `}`, "version 0"},
		{"wrong type", `{"version":1,"channels":"three"}`, "not the JSON"},
		{"colour for channels", strings.Replace(`{"version":1,`+good+`}`, `"rgb"`, `"gray"`, 1), "color"},
		{"4 channels", strings.Replace(`{"version":1,`+good+`}`, `"channels":3`, `"channels":4`, 1), "color"},
		{"resample", strings.Replace(`{"version":1,`+good+`}`, `"bilinear"`, `"bicubic"`, 1), "resample"},
		{"no resize", strings.Replace(`{"version":1,`+good+`}`, `[{"height":32,"width":32}]`, `[]`, 1), "no resize"},
		{"last step", strings.Replace(`{"version":1,`+good+`}`, `[{"height":32,"width":32}]`, `[{"height":32,"width":31}]`, 1), "last resize step"},
		{"zero step", strings.Replace(`{"version":1,`+good+`}`, `[{"height":32,"width":32}]`, `[{"height":0,"width":64},{"height":32,"width":32}]`, 1), "step 0"},
		{"zero size", strings.Replace(`{"version":1,`+good+`}`, `"height":32,"width":32,"color"`, `"height":0,"width":32,"color"`, 1), "input size"},
		{"range reversed", strings.Replace(`{"version":1,`+good+`}`, `[0,1]`, `[1,0]`, 1), "range"},
		{"range of 3", strings.Replace(`{"version":1,`+good+`}`, `[0,1]`, `[0,1,2]`, 1), "range"},
		{"no range", strings.Replace(`{"version":1,`+good+`}`, `,"range":[0,1]`, ``, 1), "range"},
		{"mean alone", `{"version":1,` + good + `,"mean":[0,0,0]}`, "both or neither"},
		{"short mean", `{"version":1,` + good + `,"mean":[0],"std":[1]}`, "for 3 channels"},
		{"zero std", `{"version":1,` + good + `,"mean":[0,0,0],"std":[1,0,1]}`, "positive"},
	}
	for _, c := range cases {
		_, err := Parse(c.json)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v (want an ErrInvalid saying %q)", c.name, err, c.says)
		}
	}
	if _, err := Parse(`{"version":1,` + good + `}`); err != nil {
		t.Fatalf("the good record: %v", err)
	}
}

// FuzzParse: any text through Parse never panics, and what it accepts is
// valid and comes back the same through Marshal and Parse.
func FuzzParse(f *testing.F) {
	for _, s := range []Spec{For("stl10", 3, 32, 32), For("mnist", 1, 28, 28)} {
		v, _ := s.Marshal()
		f.Add(v)
	}
	f.Add(`{"version":1,"channels":1,"height":8,"width":8,"color":"gray","resize":[{"height":8,"width":8}],"resample":"bilinear","range":[-1,1],"mean":[0.5],"std":[0.25]}`)
	f.Add(`{"version":1,"range":[1e309,0]}`)
	f.Fuzz(func(t *testing.T, v string) {
		s, err := Parse(v)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("an error that is not ErrInvalid: %v", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted an invalid spec: %v", err)
		}
		again, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(again)
		if err != nil || !reflect.DeepEqual(back, s) {
			t.Fatalf("round trip: %+v %v, want %+v", back, err, s)
		}
	})
}

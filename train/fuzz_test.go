package train

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// metaSeed is the checkpoint.json of a run with the default settings.
func metaSeed(tb testing.TB) []byte {
	m := Meta{Format: checkpointFormat, Dimtorch: "dev", Libtorch: "2.x", Config: Defaults(),
		State: State{Epoch: 1, Batch: 3, Step: 40, Seconds: 1.5}, Classes: []string{"a", "b"}, World: 1}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustJSON(t *testing.T, m Meta) string {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sealedSeed is metaSeed as a checkpoint writes it, with its checksum.
func sealedSeed(tb testing.TB) []byte {
	var m Meta
	if err := json.Unmarshal(metaSeed(tb), &m); err != nil {
		tb.Fatal(err)
	}
	b, err := sealedJSON(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzReadMeta: any bytes as a checkpoint's checkpoint.json through
// ReadMeta, then what the readers of a checkpoint do with its settings
// (Validate, Describe, the comparison of --resume). It never panics; what
// ReadMeta accepts has the current format, and written again as a
// checkpoint writes it (sealed with its checksum) reads back the same.
func FuzzReadMeta(f *testing.F) {
	valid := metaSeed(f)
	f.Add(valid)
	sealed := sealedSeed(f)
	f.Add(sealed)
	f.Add(bytes.Replace(sealed, []byte(`"epoch": 1`), []byte(`"epoch": 2`), 1)) // damaged after sealing
	f.Add(valid[:len(valid)/2])                                                 // truncated
	f.Add(append([]byte(`{"format": 99, `), valid[1:]...))                      // another format
	f.Add([]byte(`{"format": 1, "config": {"batch_size": "x"}}`))               // a wrong type
	f.Add([]byte(`{"format": 1, "config": {"method": {"name": "cpc", "cpc_rows": -1}}, "spec": null}`))
	f.Add([]byte(`[1, 2]`))
	f.Add([]byte(`{"format": 1e400}`))
	dir := f.TempDir() // reused: a fuzzing process runs one input at a time
	dir2 := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, "checkpoint.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := ReadMeta(dir)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		if m.Format != checkpointFormat {
			t.Fatalf("accepted format %d", m.Format)
		}
		cfg := m.Config
		_ = cfg.Validate()
		_ = cfg.Describe()
		_ = unresumable(m.Config, Defaults())
		// Written again as a checkpoint writes it (sealed), it reads back
		// the same.
		again, err := sealedJSON(m)
		if err != nil {
			t.Fatalf("what ReadMeta accepted does not marshal: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir2, "checkpoint.json"), again, 0o644); err != nil {
			t.Fatal(err)
		}
		m2, err := ReadMeta(dir2)
		if err != nil {
			t.Fatalf("rewritten: %v", err)
		}
		m.Checksum, m2.Checksum = "", ""
		if a, b := mustJSON(t, m), mustJSON(t, m2); a != b {
			t.Fatalf("rewritten, it reads back differently:\n%s\n%s", a, b)
		}
	})
}

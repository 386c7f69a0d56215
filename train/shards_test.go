package train

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/rs/zerolog"
)

// Training streams shards (--data shards:DIR) and an interrupted run
// resumes mid-epoch to the same weights as one that was not interrupted.
func TestShardsTrainAndResumeExactly(t *testing.T) {
	cfg := smallConfig(t)
	ds, err := datasets.Open(cfg.Data, datasets.Train, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "shards")
	m, err := datasets.ShardsFromDataset(context.Background(), datasets.Subset(ds, 128), datasets.ShardWriterOptions{Dir: dir, MaxBytes: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Shards) < 3 {
		t.Fatalf("%d shards", len(m.Shards))
	}
	cfg.Data, cfg.DataDir, cfg.Limit, cfg.ShuffleBuffer = datasets.ShardsPrefix+dir, "", 0, 40
	limited := cfg
	limited.Limit = 5
	if err := limited.Validate(); err == nil {
		t.Fatal("--limit with shards accepted")
	}
	a, b := interruptAndResume(t, cfg)
	sameWeights(t, a, b)
}

// An epoch that leaves out more than 5% of the shards' samples says so and
// how to fix it; one that trains nearly all of them is quiet.
func TestWarnUnserved(t *testing.T) {
	for _, c := range []struct {
		served, samples int
		want            string
	}{
		{85248, 100000, "an epoch trains 85% of the samples"},
		{99968, 100000, ""},
		{95000, 100000, ""},
		{0, 0, ""},
	} {
		var buf bytes.Buffer
		warnUnserved(zerolog.New(&buf), c.served, c.samples, 2)
		got := buf.String()
		if c.want == "" && got != "" || c.want != "" && (!strings.Contains(got, c.want) || !strings.Contains(got, "--shard-size")) {
			t.Errorf("served %d of %d: logged %q, want %q", c.served, c.samples, got, c.want)
		}
	}
}

package train

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/dimtorch/dimtorch/datasets"
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

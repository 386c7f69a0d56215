package train

import (
	"testing"

	"github.com/dimtorch/dimtorch/torch"
)

// The benchmark's step is the trainer's: with the prior game on, it reports
// the critic's loss, the loss changes, and every step frees what it made
// (live tensors flat from the second step on, when Adam's state exists).
func TestBenchStepsFreeTheirTensors(t *testing.T) {
	cfg := Defaults()
	cfg.BatchSize, cfg.Objective.MIUnits, cfg.Threads, cfg.Encoder.InChannels = 8, 16, 1, 1
	b, err := NewBench(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	in := b.Spec().Input
	x := torch.Rand([]int64{8, int64(in[0]), int64(in[1]), int64(in[2])}).MulScalar(2).SubScalar(1).ChannelsLast()
	defer x.Free()
	var first, last float64
	var live []int64
	for i := 0; i < 6; i++ {
		l, d, err := b.Step(x)
		if err != nil {
			t.Fatal(err)
		}
		if d == nil {
			t.Fatal("no critic loss with gamma 0.1")
		}
		if i == 0 {
			first = l
		}
		last = l
		live = append(live, torch.LiveTensors())
	}
	if first == last {
		t.Fatal("the loss did not change")
	}
	for i := 2; i < len(live); i++ {
		if live[i] != live[1] {
			t.Fatalf("live tensors after each step: %v", live)
		}
	}
}

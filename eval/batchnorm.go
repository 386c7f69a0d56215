package eval

import (
	"context"
	"fmt"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// CalibrateBatchNorm sets the running statistics of every BatchNorm in enc
// to the exact averages of its batch statistics over the images of d (no
// gradients, batches of 500 with a smaller last batch dropped, transform tf),
// as a trained encoder's would
// hold, and leaves enc in evaluation mode. It is what the untrained baseline
// needs: freshly initialised statistics (mean 0, variance 1) make every
// BatchNorm the identity in evaluation mode, so a probe would measure a
// random network without its normalisation, not the untrained encoder.
// It returns the number of images used.
func CalibrateBatchNorm(ctx context.Context, enc models.Encoder, d datasets.Dataset, tf datasets.Transform, dev torch.Device) (int, error) {
	var bns []*nn.BatchNorm
	nn.Walk(enc, func(_ string, m nn.Module) {
		if b, ok := m.(*nn.BatchNorm); ok {
			bns = append(bns, b)
		}
	})
	defer enc.Train(false)
	if len(bns) == 0 {
		return 0, nil
	}
	for _, b := range bns {
		if err := b.NumBatchesTracked.ZeroInPlace(); err != nil {
			return 0, err
		}
		b.Cumulative = true
	}
	defer func() {
		for _, b := range bns {
			b.Cumulative = false
		}
	}()
	l, err := datasets.NewLoader(d, datasets.LoaderOptions{BatchSize: 500, DropLast: d.Len() > 500, Workers: 2, Transform: tf, Device: dev})
	if err != nil {
		return 0, err
	}
	enc.Train(true)
	seen := 0
	err = eachBatch(ctx, l, func(b *datasets.Batch, _ *torch.Scope) error {
		if err := models.CheckInput(enc, b.X); err != nil {
			return err
		}
		if err := enc.Encode(b.X).Y.Err(); err != nil {
			return fmt.Errorf("batch-norm statistics: %w", err)
		}
		seen += int(b.X.Size(0))
		return nil
	})
	return seen, err
}

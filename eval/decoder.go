package eval

import (
	"fmt"

	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// DecoderOptions configure the reconstruction measure. Zero values: 20
// epochs, batch 128, Adam lr 1e-3.
type DecoderOptions struct {
	Epochs    int
	BatchSize int
	LR        float64
	Seed      uint64
	Progress  func(epoch int) // called after each training epoch, when set
}

// ReconstructionMSSSIM trains a decoder from frozen features (standardised)
// to the images with a mean squared error, then returns the mean MS-SSIM
// between the test images and their reconstructions, and the number of
// scales the image size allowed.
func ReconstructionMSSSIM(fTr, imgTr, fTe, imgTe *torch.Tensor, o DecoderOptions) (float64, int, error) {
	orDefault(&o.Epochs, 20)
	orDefault(&o.BatchSize, 128)
	orDefault(&o.LR, 1e-3)
	sh := imgTr.Shape()
	if len(sh) != 4 || sh[2]%4 != 0 || sh[3]%4 != 0 {
		return 0, 0, fmt.Errorf("the decoder needs image sides divisible by 4, got %v", sh)
	}
	s := torch.NewScope()
	defer s.Close()
	tr, te := standardize(fTr, fTe, s)
	if err := torch.ManualSeed(o.Seed); err != nil {
		return 0, 0, err
	}
	dec := models.NewDecoder(tr.Size(1), sh[1], sh[2], sh[3], true)
	defer nn.Free(dec)
	// fit's loss takes (output, target): here the target is the image batch,
	// selected with the same indices as the features.
	targets := imgTr.Ref(s)
	po := ProbeOptions{Epochs: o.Epochs, BatchSize: o.BatchSize, LR: o.LR, Seed: o.Seed}.with(o.Epochs, o.LR)
	if o.Progress != nil {
		po.Progress = func(epoch int, _ float64) { o.Progress(epoch) }
	}
	mse := func(out, y *torch.Tensor) *torch.Tensor { return torch.MSELoss(out, y, torch.ReduceMean) }
	if err := fit(dec, tr, targets, scaler{}, po, mse, nil); err != nil {
		return 0, 0, err
	}
	dec.Train(false)
	var vals []float64
	var scales int
	var err error
	torch.NoGrad(func() {
		rec := dec.Forward(te)
		vals, scales, err = MSSSIM(imgTe.Ref(s), rec, SSIMOptions{})
	})
	if err != nil {
		return 0, 0, err
	}
	var m float64
	for _, v := range vals {
		m += v
	}
	return m / float64(len(vals)), scales, nil
}

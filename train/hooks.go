package train

import (
	"fmt"
	"math"
	"time"

	"github.com/schollz/progressbar/v3"
)

// A hook is a side job of the training loop. Run calls every hook at the
// start of each epoch (or of what remains of it), after each step, and at
// the end of each epoch, in the order hooks gives; an error ends the run.
// In a data-parallel job every rank runs every hook (the online probe's
// scores are collectives); those that write the run directory do it on rank
// 0 alone.
type hook interface {
	epochStart(t *Trainer, r *run) error
	afterStep(t *Trainer, r *run, v stepValues, images int64) error
	// epochEnd sees the epoch's record; t.state has moved to the next epoch.
	epochEnd(t *Trainer, r *run, rec *Record) error
}

// hooks are the run's side jobs: the progress bar on a terminal (rank 0),
// the online probe's scores (which the epoch's record carries), the metrics
// and curves, and the checkpoint.
func (t *Trainer) hooks() []hook {
	var hs []hook
	bar := t.o.Progress != nil && t.leader()
	if bar {
		hs = append(hs, &progressHook{})
	}
	if t.probe != nil {
		hs = append(hs, &probeHook{})
	}
	return append(hs, &metricsHook{logSteps: !bar && t.leader()}, checkpointHook{})
}

// probeHook scores the online probe: its accuracy on the epoch's training
// batches and on the test split.
type probeHook struct{}

func (probeHook) epochStart(t *Trainer, _ *run) error {
	if t.state.Batch == 0 {
		t.probe.reset()
	}
	return nil
}

func (probeHook) afterStep(*Trainer, *run, stepValues, int64) error { return nil }

func (probeHook) epochEnd(t *Trainer, r *run, rec *Record) error {
	correct, seen := t.probe.correct, t.probe.seen
	if err := t.sumCounts(&correct, &seen); err != nil {
		return err
	}
	tr := float64(correct) / float64(max(1, seen))
	rec.ProbeTrainAcc = &tr
	if t.test == nil {
		return nil
	}
	te, err := t.evalProbe(r.data)
	if err != nil {
		if r.ctx.Err() != nil && t.par.alone() {
			return nil // interrupted while scoring: the checkpoint matters more
		}
		return err
	}
	rec.ProbeTestAcc, r.sum.ProbeTestAcc = &te, &te
	return nil
}

// metricsHook writes a record of the steps' mean values every --log-every
// steps and at the end of each epoch (and a log line for each when there is
// no progress bar), then redraws the curves.
type metricsHook struct {
	logSteps bool
	acc      stepAccumulator
	window   time.Time
}

func (m *metricsHook) epochStart(*Trainer, *run) error {
	m.acc, m.window = stepAccumulator{}, time.Now()
	return nil
}

func (m *metricsHook) afterStep(t *Trainer, _ *run, v stepValues, images int64) error {
	m.acc.add(v, images)
	if t.state.Step%int64(max(1, t.cfg.LogEvery)) != 0 && t.state.Batch != t.train.NumBatches() {
		return nil
	}
	rate := float64(m.acc.images) / time.Since(m.window).Seconds()
	rec := m.acc.record(t.state.Epoch, t.state.Step, rate)
	if err := t.metrics.write(rec); err != nil {
		return err
	}
	if m.logSteps {
		t.o.Log.Info().Int("epoch", t.state.Epoch+1).Int64("step", t.state.Step).Float64("loss", rec.Loss).Float64("images_per_sec", math.Round(rate)).Msg("step")
	}
	m.acc, m.window = stepAccumulator{}, time.Now()
	return nil
}

func (m *metricsHook) epochEnd(t *Trainer, _ *run, rec *Record) error {
	if err := t.metrics.write(*rec); err != nil {
		return err
	}
	if err := t.metrics.plot(t.o.Out); err != nil {
		t.o.Log.Warn().Err(err).Msg("could not draw loss.png")
	}
	return nil
}

// checkpointHook saves the run at the end of each epoch (rank 0).
type checkpointHook struct{}

func (checkpointHook) epochStart(*Trainer, *run) error                   { return nil }
func (checkpointHook) afterStep(*Trainer, *run, stepValues, int64) error { return nil }

func (checkpointHook) epochEnd(t *Trainer, _ *run, _ *Record) error {
	if t.leader() {
		if err := t.save(); err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
	}
	t.savedStep = t.state.Step
	return nil
}

// progressHook draws a progress bar of the epoch's batches.
type progressHook struct{ bar *progressbar.ProgressBar }

func (p *progressHook) epochStart(t *Trainer, _ *run) error {
	p.bar = progressbar.NewOptions(t.train.NumBatches(), progressbar.OptionSetWriter(t.o.Progress),
		progressbar.OptionSetDescription(fmt.Sprintf("epoch %d/%d", t.state.Epoch+1, t.cfg.Epochs)),
		progressbar.OptionShowCount(), progressbar.OptionSetWidth(24), progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish())
	return p.bar.Set(t.state.Batch)
}

func (p *progressHook) afterStep(t *Trainer, _ *run, v stepValues, _ int64) error {
	p.bar.Describe(fmt.Sprintf("epoch %d/%d loss %.4f", t.state.Epoch+1, t.cfg.Epochs, v.loss))
	return p.bar.Add(1)
}

func (p *progressHook) epochEnd(*Trainer, *run, *Record) error { return p.bar.Finish() }

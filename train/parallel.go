package train

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strings"

	"github.com/dimtorch/dimtorch/objectives"
	"github.com/dimtorch/dimtorch/torch"
	"github.com/dimtorch/dimtorch/torch/dist"
	"github.com/dimtorch/dimtorch/torch/nn"
)

// Data-parallel training. Every rank builds the same networks from the
// seed, rank 0's parameters and buffers are broadcast at the start (after a
// check that every rank built the same shapes), each rank reads its own
// shard of every epoch, and DDP's Reducer averages the gradients of the
// encoder and MI heads, of the prior's discriminator and of the online probe
// during their backward passes, so every rank takes the same optimiser step.
// BatchNorm statistics are per rank (as DDP without SyncBatchNorm) unless
// --sync-bn normalises with the global batch's; rank 0's running statistics
// are broadcast before the test-set probe and are the ones saved. After each
// step one small all-reduce shares the step's losses (the logged loss is the
// mean over ranks) and whether any rank was asked to stop, so that all ranks
// stop after the same step. Rank 0 alone writes the checkpoint, the metrics,
// the plot and the progress bar.

// parallel is the trainer's part in a data-parallel job.
type parallel struct {
	g                   *dist.Group
	main, critic, probe *dist.Reducer
}

func (t *Trainer) rank() int {
	if t.par == nil {
		return 0
	}
	return t.par.g.Rank()
}

func (t *Trainer) world() int {
	if t.par == nil {
		return 1
	}
	return t.par.g.World()
}

// leader reports whether this process writes the run directory.
func (t *Trainer) leader() bool { return t.rank() == 0 }

// modules returns every network whose state the ranks share.
func (t *Trainer) modules() []nn.Module {
	var ms []nn.Module
	for _, p := range t.parts() {
		ms = append(ms, p.mod)
	}
	return ms
}

// joinGroup makes this trainer one rank of o.Group: same weights as rank 0,
// reducers on the gradients, and a random stream of its own.
func (t *Trainer) joinGroup(g *dist.Group) error {
	t.par = &parallel{g: g}
	if err := t.sameSettings(); err != nil {
		return err
	}
	var params, buffers []*torch.Tensor
	for _, m := range t.modules() {
		params = append(params, nn.Parameters(m)...)
		for _, b := range m.NamedBuffers() {
			buffers = append(buffers, b.Tensor)
		}
	}
	all := append(append([]*torch.Tensor{}, params...), buffers...)
	if err := g.Verify(all...); err != nil {
		return fmt.Errorf("the ranks built different networks (same configuration on every rank?): %w", err)
	}
	if err := g.Broadcast(0, all...); err != nil {
		return err
	}
	var err error
	if t.par.main, err = g.NewReducer(append(nn.Parameters(t.enc), nn.Parameters(t.method)...)); err != nil {
		return err
	}
	if t.critic != nil {
		if t.par.critic, err = g.NewReducer(nn.Parameters(t.critic.Net())); err != nil {
			return err
		}
	}
	if t.probe != nil {
		if t.par.probe, err = g.NewReducer(nn.Parameters(t.probe.lin)); err != nil {
			return err
		}
	}
	if d, ok := t.method.(objectives.Gatherer); ok && t.cfg.GlobalNegatives {
		d.SetGather(g.AllGather)
	}
	if t.cfg.SyncBN {
		nn.SyncBatchNorm(t.enc, g.AllGather)
		nn.SyncBatchNorm(t.method, g.AllGather)
	}
	return nil
}

// reseed gives ranks other than 0 a random stream of their own for the next
// step (their prior samples and occlusions), a function of the seed, the
// rank and the step, so that a resumed job draws what an uninterrupted one
// would. Rank 0 keeps the stream of a single-process run, which its
// checkpoint saves.
func (t *Trainer) reseed() error {
	r := t.rank()
	if r == 0 {
		return nil
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%d", t.cfg.Seed, r, t.state.Step)
	return torch.ManualSeed(h.Sum64())
}

// sameSettings fails on every rank unless all ranks run the same
// configuration (but the settings declared PerRank: threads, workers,
// logging, the data directory), from the same position, with the same data: otherwise their
// collectives would not match and the job would hang until the timeout.
func (t *Trainer) sameSettings() error {
	fields := rankFields(t.cfg)
	fields["position (epoch, batch, step)"] = []any{t.state.Epoch, t.state.Batch, t.state.Step}
	fields["images in the training set"] = t.train.Len()
	fields["test split"] = t.test != nil
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	hashes := make([]int64, len(names))
	for i, k := range names {
		v, _ := json.Marshal(fields[k])
		h := fnv.New32a()
		h.Write(v)
		hashes[i] = int64(h.Sum32())
	}
	lo := torch.FromSlice(hashes, []int64{int64(len(hashes))})
	defer lo.Free()
	hi := torch.FromSlice(hashes, []int64{int64(len(hashes))})
	defer hi.Free()
	if err := t.par.g.AllReduce(dist.Min, lo); err != nil {
		return err
	}
	if err := t.par.g.AllReduce(dist.Max, hi); err != nil {
		return err
	}
	a, _ := lo.Int64s()
	z, _ := hi.Int64s()
	var differ []string
	for i := range names {
		if len(a) != len(names) || len(z) != len(names) || a[i] != z[i] {
			differ = append(differ, names[i])
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("the ranks were started with different settings (%s): start every rank with the same command, "+
			"and on several machines give every node the same data and run directory", strings.Join(differ, ", "))
	}
	return nil
}

func (p *parallel) close() {
	if p == nil {
		return
	}
	p.main.Close()
	p.critic.Close()
	p.probe.Close()
}

// The trainer's data-parallel differences: each method below does nothing
// (or the single process's thing) on a nil *parallel, so the training loop
// calls them unconditionally.

// alone reports whether the trainer trains in one process.
func (p *parallel) alone() bool { return p == nil }

// dataContext is what the loaders read under: in a job the ranks stop
// together after a step (shareStep), so a signal must not cut one rank's
// data short.
func (p *parallel) dataContext(ctx context.Context) context.Context {
	if p == nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// beforeStep gives the rank its random stream for the step and arms the
// encoder's reducer for the backward pass.
func (p *parallel) beforeStep(t *Trainer) error {
	if p == nil {
		return nil
	}
	if err := t.reseed(); err != nil {
		return err
	}
	return p.collective(t, p.main.Prepare())
}

// beforeCritic arms the critic's reducer.
func (p *parallel) beforeCritic(t *Trainer) error {
	if p == nil || p.critic == nil {
		return nil
	}
	return p.collective(t, p.critic.Prepare())
}

// probeReducer averages the online probe's gradients (nil alone).
func (p *parallel) probeReducer() *dist.Reducer {
	if p == nil {
		return nil
	}
	return p.probe
}

// collective says what a failed collective most likely means; alone, err
// is returned as it is.
func (p *parallel) collective(t *Trainer, err error) error {
	if p == nil || err == nil {
		return err
	}
	return t.commError(err)
}

// shareStep averages the step's values over the ranks and reports whether
// any rank asked to stop.
func (t *Trainer) shareStep(v *stepValues, stop bool) (bool, error) {
	if t.par == nil {
		return stop, nil
	}
	flag := 0.0
	if stop {
		flag = 1
	}
	dst := []*float64{&v.loss}
	for i := range v.terms {
		dst = append(dst, &v.terms[i])
	}
	vals := []float64{flag}
	for _, d := range dst {
		vals = append(vals, *d)
	}
	x := torch.FromSlice(vals, []int64{int64(len(vals))})
	defer x.Free()
	if err := t.par.g.AllReduce(dist.Sum, x); err != nil {
		return false, t.commError(err)
	}
	got, err := x.Float64s()
	if err != nil {
		return false, err
	}
	w := float64(t.world())
	for i, d := range dst {
		*d = got[i+1] / w
	}
	return got[0] > 0, nil
}

// sumCounts adds integer counts over the ranks.
func (t *Trainer) sumCounts(c ...*int64) error {
	if t.par == nil {
		return nil
	}
	vals := make([]float64, len(c))
	for i, p := range c {
		vals[i] = float64(*p)
	}
	x := torch.FromSlice(vals, []int64{int64(len(vals))})
	defer x.Free()
	if err := t.par.g.AllReduce(dist.Sum, x); err != nil {
		return t.commError(err)
	}
	got, err := x.Float64s()
	if err != nil {
		return err
	}
	for i, p := range c {
		*p = int64(math.Round(got[i]))
	}
	return nil
}

// shareBuffers gives every rank rank 0's BatchNorm statistics.
func (t *Trainer) shareBuffers() error {
	if t.par == nil {
		return nil
	}
	var buffers []*torch.Tensor
	for _, m := range t.modules() {
		for _, b := range m.NamedBuffers() {
			buffers = append(buffers, b.Tensor)
		}
	}
	if err := t.par.g.Broadcast(0, buffers...); err != nil {
		return t.commError(err)
	}
	return nil
}

// commError says what a failed collective most likely means.
func (t *Trainer) commError(err error) error {
	return fmt.Errorf("rank %d lost contact with the other ranks (one of them stopped or died; its own error says why): %w", t.rank(), err)
}

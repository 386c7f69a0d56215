package serve

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrOverloaded is returned when accepting a request would queue more
// images than Config.MaxQueue: the client should retry later (HTTP 429).
var ErrOverloaded = errors.New("the server is at capacity: retry later")

// errClosed is returned for work submitted after shutdown began.
var errClosed = errors.New("the server is shutting down")

// runner embeds a batch of images given as one float32 NCHW slice.
type runner func(ctx context.Context, pixels []float32, n int) ([][]float32, error)

// job is one request's images waiting for the model.
type job struct {
	ctx    context.Context
	pixels []float32
	n      int
	done   chan result // buffered: the batcher never blocks on it
}

type result struct {
	vecs [][]float32
	err  error
	run  runTiming
}

// runTiming is when a job's images ran, and with how many others, for
// the request's trace.
type runTiming struct {
	start, end time.Time
	batch      int // images in the run
}

// batcher turns concurrent requests into model runs: with batching on,
// each of its runner goroutines collects jobs until MaxBatch images are waiting or MaxWait has
// passed since the first, runs them as one batch and hands each job its
// rows; with batching off, each job runs at once on its own. Either way at
// most MaxQueue images are accepted but not yet answered.
type batcher struct {
	run      runner
	batching bool
	maxBatch int
	maxWait  time.Duration
	maxQueue int64

	queued  atomic.Int64 // images accepted and not yet answered
	in      chan *job
	mu      sync.RWMutex // guards closed against submissions
	closed  bool
	wg      sync.WaitGroup
	onBatch func(images int) // metrics hook
	// inflight counts the requests on their way to the batcher (decoding)
	// or in it: a batch waits for more only while some are on their way.
	inflight atomic.Int64
}

func newBatcher(run runner, batching bool, runners, maxBatch int, maxWait time.Duration, maxQueue int, onBatch func(int)) *batcher {
	b := &batcher{run: run, batching: batching, maxBatch: maxBatch, maxWait: maxWait, maxQueue: int64(maxQueue),
		in: make(chan *job, maxQueue), onBatch: onBatch}
	if batching {
		for i := 0; i < max(1, runners); i++ {
			b.wg.Add(1)
			go b.loop()
		}
	}
	return b
}

// Queued returns the images accepted and not yet answered.
func (b *batcher) Queued() int64 { return b.queued.Load() }

// embed submits n images and waits for their vectors, or for ctx; it
// says when they ran (zero when they did not).
func (b *batcher) embed(ctx context.Context, pixels []float32, n int) ([][]float32, runTiming, error) {
	if q := b.queued.Add(int64(n)); q > b.maxQueue {
		b.queued.Add(int64(-n))
		return nil, runTiming{}, ErrOverloaded
	}
	if !b.batching {
		defer b.queued.Add(int64(-n))
		b.onBatch(n)
		t := runTiming{start: time.Now(), batch: n}
		vecs, err := b.run(ctx, pixels, n)
		t.end = time.Now()
		return vecs, t, err
	}
	j := &job{ctx: ctx, pixels: pixels, n: n, done: make(chan result, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		b.queued.Add(int64(-n))
		return nil, runTiming{}, errClosed
	}
	// Never blocks: a job leaves the count only when a runner has answered
	// it (even if its client left), so the channel, which holds maxQueue
	// jobs of at least one image, always has room.
	b.in <- j
	b.mu.RUnlock()
	select {
	case r := <-j.done:
		return r.vecs, r.run, r.err
	case <-ctx.Done():
		return nil, runTiming{}, ctx.Err() // the batcher skips or discards the job
	}
}

// close stops accepting work and returns when every accepted job is done.
func (b *batcher) close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.in)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *batcher) loop() {
	defer b.wg.Done()
	var carry *job
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		first := carry
		carry = nil
		if first == nil {
			var ok bool
			if first, ok = <-b.in; !ok {
				return
			}
		}
		batch := []*job{first}
		n := first.n
		// take adds a received job to the batch, or keeps it for the next
		// one when it does not fit; it reports whether to go on filling.
		take := func(j *job, ok bool) bool {
			if !ok {
				return false
			}
			if n+j.n > b.maxBatch {
				carry = j
				return false
			}
			batch = append(batch, j)
			n += j.n
			return true
		}
		// Take what is already queued, then wait up to maxWait for more
		// only while other requests are still on their way: a lone request
		// runs at once.
	drain:
		for n < b.maxBatch {
			select {
			case j, ok := <-b.in:
				if !take(j, ok) {
					break drain
				}
			default:
				break drain
			}
		}
		if carry == nil && n < b.maxBatch && b.maxWait > 0 && b.inflight.Load() > int64(len(batch)) {
			timer.Reset(b.maxWait)
		fill:
			for n < b.maxBatch && b.inflight.Load() > int64(len(batch)) {
				select {
				case j, ok := <-b.in:
					if !take(j, ok) {
						break fill
					}
				case <-timer.C:
					break fill
				}
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		b.runBatch(batch)
	}
}

// runBatch runs the jobs whose clients are still waiting as one batch.
func (b *batcher) runBatch(batch []*job) {
	live := batch[:0]
	n := 0
	for _, j := range batch {
		if j.ctx.Err() != nil {
			j.done <- result{err: j.ctx.Err()}
			b.queued.Add(int64(-j.n))
			continue
		}
		live = append(live, j)
		n += j.n
	}
	if n == 0 {
		return
	}
	pixels := live[0].pixels
	if len(live) > 1 {
		pixels = make([]float32, 0, len(live[0].pixels)/live[0].n*n)
		for _, j := range live {
			pixels = append(pixels, j.pixels...)
		}
	}
	b.onBatch(n)
	t := runTiming{start: time.Now(), batch: n}
	vecs, err := b.run(context.Background(), pixels, n)
	t.end = time.Now()
	at := 0
	for _, j := range live {
		if err != nil {
			j.done <- result{err: err, run: t}
		} else {
			j.done <- result{vecs: vecs[at : at+j.n], run: t}
			at += j.n
		}
		b.queued.Add(int64(-j.n))
	}
}

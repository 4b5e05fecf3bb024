package dispatcher

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/ringbus/ringbus/internal/atomicx"
)

// maxBatch bounds how long a batch grows with the next jobs of its keys
// before they are handed on (see runBatch).
const maxBatch = 2 * popBatch

// keyRun is how many next jobs of a key a batch takes from the key's
// backlog at once (see runBatch): enough to pay the key table's lock once
// for several jobs when a key is busy, few enough that a busy key delays
// the other jobs of the batch by a few of its jobs only.
const keyRun = 8

// errStopped is what interrupted reports for a consumer's ctx; the caller
// turns it into the ctx's own error.
var errStopped = context.Canceled

// runBatch is the batch loop of every consumer: Run's workers, Tick,
// Drain and Shutdown's drain. It processes jobs, which p took, in order,
// and returns how many it processed. Before each job it checks ctx and the
// dispatcher's state: when either says stop, the rest is handed back
// (dropped if the dispatcher closed) and runBatch returns ErrClosed or
// errStopped.
//
// Under Run (keyed true) the batch owns the key of every keyed job in it
// (see keyq.AdmitRounds): its jobs come in rounds, one job of each key per
// round, and the last job of each key is marked. After that one, the next
// jobs of its key, if any (ones that other takes admitted meanwhile), up
// to keyRun of them, join the end of this batch with the key, so that the
// batch goes on round its keys; once the batch has grown to maxBatch, the
// next job is handed on with the key to whichever worker takes first
// instead, so that a worker with busy keys still comes back for new work.
//
// A handler's panic ends runJobs, whose deferred recover is the only one
// of the batch: runBatch accounts for the call and runs runJobs again from
// there (see afterPanic). A handler that calls runtime.Goexit ends the
// goroutine in the middle of the loop; the deferred unwind accounts for
// the call and hands back what the batch had left, so that nothing is
// lost or reordered.
func (p *proc) runBatch(jobs []job, ctx context.Context, keyed bool) (n int, err error) {
	taken := jobs // p.batch may move to a larger array as keys' next jobs join
	p.batch, p.at, p.batchN = jobs, 0, 0
	finished := false
	p.setHeld(len(jobs))
	defer func() {
		if !finished {
			p.unwind(p.batch, p.at, keyed)
		}
		p.setHeld(0)
		p.flush()
		if p.worker {
			// A sequentially consistent store before the broadcast's
			// load of its waiters (see Dispatcher.awaitCallsUpTo).
			p.cur.Store(0)
			p.d.batchEnd.broadcast()
		}
		// Keep no payload reachable.
		clearJobs(p.batch)
		if &taken[0] != &p.batch[0] {
			clearJobs(taken)
		}
		p.batch = nil
	}()
	for {
		err = p.runJobs(ctx, keyed)
		if p.callErr == nil {
			break
		}
		p.afterPanic()
	}
	finished = true
	return p.batchN, err
}

// runJobs is runBatch's loop, from the job at p.at on. When a handler
// panics, its deferred recover leaves the failure in p.callErr, the call
// named by p.at, p.fan and p.fanAt, and runJobs returns. When a handler
// calls runtime.Goexit, it leaves ErrGoexit there for the unwind. A panic
// outside a handler call is the dispatcher's own and goes on.
func (p *proc) runJobs(ctx context.Context, keyed bool) (err error) {
	returned := false
	defer func() {
		if returned {
			return
		}
		r := recover()
		switch {
		case !p.calling && r != nil:
			panic(r)
		case !p.calling:
		case r == nil:
			p.callErr = ErrGoexit
		default:
			p.callErr = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	d := p.d
	jobs := p.batch
	stoppable := ctx.Done() != nil // else ctx never ends: no need to ask it
	for i := p.at; i < len(jobs); i++ {
		p.at = i
		if !p.resume {
			if err = d.interrupted(ctx, stoppable); err != nil {
				p.handBack(jobs[i:], keyed, err == ErrClosed)
				break
			}
			p.setHeld(len(jobs) - i - 1) // jobs[i] is in progress now
			if p.worker {
				atomicx.StoreRelease(&p.cur, jobs[i].ev.ID)
			}
			p.batchN++
		}
		j := &jobs[i]
		if !p.process(j, keyed) || !keyed || !j.last {
			continue // cut short, its key handed back; or no key to release yet
		}
		if len(jobs) >= maxBatch {
			// The batch has grown long: the key goes on with its next job
			// to whichever worker takes first.
			if next, ok := d.pend.keys.Release(j.ev.Key); ok {
				d.pend.handOn(next)
				d.notify()
			}
			continue
		}
		// Keep the key: up to keyRun of its next jobs run after the rest
		// of this batch, so the other jobs here wait for keyRun jobs of
		// this key at most, and the key is released once for them all.
		var ok bool
		if jobs, ok = d.pend.keys.ReleaseN(j.ev.Key, jobs, min(keyRun, maxBatch-len(jobs))); ok {
			jobs[len(jobs)-1].last = true
			p.batch = jobs
		}
	}
	returned = true
	return err
}

// afterPanic accounts for the handler call that panicked (see runJobs) as
// a failure and sets process to go on after it, at the job's next
// subscriber or, for its last one, with the end of the job.
func (p *proc) afterPanic() {
	j := &p.batch[p.at]
	s := j.sub
	if p.fan != nil {
		s = p.fan[p.fanAt]
	}
	if s.hist != nil {
		s.hist[p.idx].record(time.Since(p.callStart))
	}
	err := p.callErr
	p.calling, p.callErr = false, nil
	p.resume = true // process goes on after the call: p.fan and p.fanAt say where
	p.fail(s, &j.ev, j.tr, err)
}

// clearJobs zeroes jobs. A bulk clear of memory with pointers pays a fixed
// cost for its write barrier, which a short batch (a Drain of one event)
// does not amortize: short ones are cleared element by element (a range
// over the length, which the compiler does not turn into a bulk clear).
func clearJobs(jobs []job) {
	if len(jobs) > 8 {
		clear(jobs)
		return
	}
	for i := range len(jobs) {
		jobs[i] = job{}
	}
}

// interrupted reports why a consumer must stop between two jobs: Close
// (ErrClosed) or its ctx (errStopped), which it asks only if stoppable (a
// ctx whose Done is nil never ends). It asks ctx.Err, an atomic load in the
// standard library's contexts (Run's workers' ctx is a WithCancel), rather
// than polling ctx.Done in a select, which costs two calls into the
// channel code at every job.
func (d *Dispatcher) interrupted(ctx context.Context, stoppable bool) error {
	if d.state.Load() == stateClosed {
		return ErrClosed
	}
	if stoppable && ctx.Err() != nil {
		return errStopped
	}
	return nil
}

// handBack returns jobs that p took and will not process: dropped and
// counted if drop, else put back in front of the ring. Under Run they give
// up their keys, whose backlogs go back with them in order.
func (p *proc) handBack(jobs []job, keyed, drop bool) {
	d := p.d
	back := jobs
	if keyed {
		// The batch owns the key of each of its keyed jobs: the first
		// job of each key gives it up with its backlog (abandoning a key
		// given up already does nothing), and putBack sorts what comes
		// back by ID, the key's later jobs of this batch with the rest.
		// Under takeMu, so that no worker
		// admits a later job of these keys between the abandon and the
		// put-back (see Dispatcher.takeJobs).
		d.pend.takeMu.Lock()
		defer d.pend.takeMu.Unlock()
		back = make([]job, 0, len(jobs))
		for _, j := range jobs {
			back = append(back, j)
			if j.ev.Key != "" {
				back = d.pend.keys.Abandon(j.ev.Key, back)
			}
		}
	}
	if drop {
		d.dropJobs(p, back)
		return
	}
	d.pend.putBack(back)
}

// unwind runs when a handler ended the goroutine with runtime.Goexit
// while p processed jobs[i]: it records the call's failure, gives the event
// to the subscribers after the failed one (a share for each, in order),
// and hands back those shares and the rest of the batch. Under Run the
// shares keep the key of jobs[i] until they are taken again.
func (p *proc) unwind(jobs []job, i int, keyed bool) {
	cur := &jobs[i]
	var back []job
	if p.calling {
		s := cur.sub
		if p.fan != nil {
			s = p.fan[p.fanAt]
			for _, t := range p.fan[p.fanAt+1:] {
				if t.active.Load() {
					p.d.ledger.spawn(cur.ev.ID, 1)
					cur.tr.hold()
					back = append(back, job{ev: cur.ev, sub: t, tr: cur.tr})
				}
			}
		}
		p.calling, p.fan = false, nil
		p.fail(s, &cur.ev, cur.tr, p.callErr)
		p.callErr = nil
		p.ended(cur.ev.ID)
		cur.tr.release()
	} else {
		// Not begun: hand it back as it is. (A panic outside a handler
		// call, in an Observer hook, can leave a fan-out behind: no job
		// after this one may find it, see countDelivered.)
		p.fan = nil
		back = append(back, *cur)
	}
	if keyed && cur.last && len(back) == 0 {
		// Nothing of cur is left, and it was its key's last job in the
		// batch: release its key as after any such job. (A later job of
		// the key in jobs[i+1:] gives the key up in handBack.)
		if next, ok := p.d.pend.keys.Release(cur.ev.Key); ok {
			p.d.pend.handOn(next)
		}
	}
	p.handBack(append(back, jobs[i+1:]...), keyed, p.d.state.Load() == stateClosed)
}

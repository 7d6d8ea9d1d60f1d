package gateway

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/ztgate/ztgate/policies"
)

const (
	// DefaultDecisionQueue bounds decisions waiting for a policy worker.
	DefaultDecisionQueue = 4096
	// DefaultDecisionWait bounds how long an exchange waits for a free policy worker before it is
	// refused as "no decision" (fail closed under overload).
	DefaultDecisionWait = time.Second
)

// decisionPool runs policy evaluations on a few long-lived goroutines. Rego evaluation recurses
// deeply; on the fresh, small stack of a per-request goroutine it spends much of its time growing
// that stack, while a worker's stack stays grown between decisions.
type decisionPool struct {
	Decider
	jobs chan *decideJob
	once sync.Once
	stop chan struct{}
}

type decideJob struct {
	ctx context.Context
	in  *policies.Input
	out chan policies.Decision
}

var jobPool = sync.Pool{New: func() any { return &decideJob{out: make(chan policies.Decision, 1)} }}

func newDecisionPool(d Decider, workers int) *decisionPool {
	if workers <= 0 {
		workers = 2 * runtime.GOMAXPROCS(0)
	}
	p := &decisionPool{Decider: d, jobs: make(chan *decideJob, DefaultDecisionQueue), stop: make(chan struct{})}
	for i := 0; i < workers; i++ {
		go p.work()
	}
	return p
}

func (p *decisionPool) work() {
	for {
		select {
		case <-p.stop:
			return
		case j := <-p.jobs:
			j.out <- p.Decider.Decide(j.ctx, j.in)
		}
	}
}

// Decide hands the evaluation to a worker and waits for it. It fails closed: a full queue or a
// context that ends first is "no decision".
func (p *decisionPool) Decide(ctx context.Context, in *policies.Input) policies.Decision {
	j := jobPool.Get().(*decideJob)
	j.ctx, j.in = ctx, in
	t := time.NewTimer(DefaultDecisionWait)
	defer t.Stop()
	select {
	case p.jobs <- j:
	case <-t.C:
		return noDecision("policy engine overloaded")
	case <-ctx.Done():
		return noDecision("not evaluated: " + ctx.Err().Error())
	}
	// Once queued, the worker always answers (the engine bounds every evaluation by its deadline),
	// so the job can go back to the pool afterwards.
	d := <-j.out
	j.ctx, j.in = nil, nil
	jobPool.Put(j)
	return d
}

func (p *decisionPool) close() { p.once.Do(func() { close(p.stop) }) }

func noDecision(why string) policies.Decision {
	return policies.Decision{NoDecision: true, Reasons: []policies.Reason{{Code: policies.ReasonNoDecision, Message: why}}}
}

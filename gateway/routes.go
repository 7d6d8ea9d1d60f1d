package gateway

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"
)

// provider is one adapter connection that announced services.
type provider struct {
	conn     *quic.Conn
	peer     peer
	hello    atomic.Bool   // HELLO is once per connection
	renewals *rate.Limiter // RENEW costs a signature and a record: bounded per connection
}

// routes maps a service to the provider connections that may serve it. The newest announcement is
// preferred, so an adapter that re-dials after rotating its SVID takes over before it drains the old
// connection.
type routes struct {
	mu    sync.RWMutex
	bySvc map[string][]*provider
}

func newRoutes() *routes { return &routes{bySvc: make(map[string][]*provider)} }

func (r *routes) add(svc string, p *provider) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bySvc[svc] = append(r.bySvc[svc], p)
}

func (r *routes) remove(svc string, p *provider) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.bySvc[svc]
	for i, q := range list {
		if q == p {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(r.bySvc, svc)
	} else {
		r.bySvc[svc] = list
	}
}

// pick returns the newest live provider for svc whose SVID has not expired, or nil.
func (r *routes) pick(svc string, now time.Time) *provider {
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := r.bySvc[svc]
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].conn.Context().Err() == nil && now.Before(list[i].peer.notAfter) {
			return list[i]
		}
	}
	return nil
}

package gateway

import (
	"slices"
	"sync/atomic"
)

// Rollout runs a candidate bundle beside the enforced one. For every exchange both decide; the
// candidate's decision is recorded in shadow — never enforced — until the officers promote it for
// a service (or for all, "*"), after which the candidate enforces there and the previous bundle's
// decision is the one recorded in shadow. Promotion takes effect on the next exchange, with no
// restart and no dropped connection.
type Rollout struct {
	// Candidate decides beside the enforced bundle.
	Candidate Decider
	enforce   atomic.Pointer[enforceSet]
}

type enforceSet struct {
	all      bool
	services map[string]bool
	list     []string
}

// NewRollout returns a rollout of candidate, enforcing for the services listed.
func NewRollout(candidate Decider, enforce []string) *Rollout {
	r := &Rollout{Candidate: candidate}
	r.SetEnforce(enforce)
	return r
}

// SetEnforce replaces the services where the candidate enforces; "*" means every service.
func (r *Rollout) SetEnforce(services []string) {
	s := &enforceSet{services: make(map[string]bool, len(services)), list: slices.Sorted(slices.Values(services))}
	for _, svc := range services {
		if svc == "*" {
			s.all = true
		}
		s.services[svc] = true
	}
	r.enforce.Store(s)
}

// Enforced lists the services where the candidate enforces.
func (r *Rollout) Enforced() []string { return slices.Clone(r.enforce.Load().list) }

// Enforces reports whether the candidate's decision is the one enforced for service.
func (r *Rollout) Enforces(service string) bool {
	s := r.enforce.Load()
	return s.all || s.services[service]
}

package plugin

import (
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/open-autoglm/autoglm/filter/ratelimit"
)

// global asks the rate limit service for a hit on the tenant's
// descriptor, holding the request until it answers; true when the request
// waits (or was answered: a failure with fail_open false). The local
// buckets have admitted it already: a request they refuse costs no call.
func (s *stream) global() bool {
	g := s.p.cfg.Throttle.Global
	entries := [][2]string{{"tenant", s.tenant}}
	if g.PerModel {
		entries = append(entries, [2]string{"model", s.req.Model})
	}
	hs := s.callout([2]string{":method", "POST"}, [2]string{":path", g.Path}, [2]string{":authority", g.Authority}, [2]string{"content-type", "application/json"})
	_, err := proxywasm.DispatchHttpCall(g.Cluster, hs, ratelimit.Request(g.Domain, entries, 1), nil, uint32(g.Timeout.Milliseconds()),
		func(_, bodySize, _ int) {
			s.awaiting = false
			switch status := calloutStatus(); status {
			case "200":
				s.resume(s.admitted())
			case "429":
				body, _ := proxywasm.GetHttpCallResponseBody(0, bodySize)
				v, err := ratelimit.ParseResponse(body)
				if err != nil {
					proxywasm.LogWarnf("autoglm filter: rate limit service: %v", err)
				}
				s.unreserve()
				s.refuseGlobal(v)
			default: // "" when the call failed or timed out
				s.p.m.stateErrors.Increment(1)
				proxywasm.LogWarnf("autoglm filter: rate limit service %s answered %q", g.Cluster, status)
				if s.p.cfg.Throttle.FailOpen {
					s.resume(s.admitted())
					return
				}
				s.unreserve()
				s.unavailable()
			}
		})
	if err != nil {
		s.p.m.stateErrors.Increment(1)
		proxywasm.LogWarnf("autoglm filter: rate limit service %s: %v", g.Cluster, err)
		if s.p.cfg.Throttle.FailOpen {
			return false
		}
		s.unreserve()
		s.unavailable()
		return true
	}
	s.awaiting = true
	return true
}

// resume lets a held request go on when a callback decided it should.
func (s *stream) resume(a types.Action) {
	if a != types.ActionContinue {
		return
	}
	if err := proxywasm.ResumeHttpRequest(); err != nil {
		proxywasm.LogErrorf("autoglm filter: resuming the request: %v", err)
	}
}

// unreserve gives back what the local buckets took for a request that
// will not run: its tokens, and its request when it came from a lease.
func (s *stream) unreserve() {
	if s.reserved > 0 {
		s.settle(s.reserved)
		s.reserved = 0
	}
	if s.lease != nil {
		s.lease.held[0] += s.took
		s.took = 0
	}
}

func (s *stream) refuseGlobal(v ratelimit.Verdict) {
	wait := v.Reset
	if wait <= 0 {
		wait = time.Second
	}
	s.refuse(float64(v.Limit), float64(v.Remaining), int64(wait), "requests (all proxies)")
}

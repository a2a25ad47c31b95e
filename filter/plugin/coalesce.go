package plugin

import (
	"encoding/binary"
	"errors"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// Request coalescing: of concurrent identical cacheable misses, on any
// worker, one goes upstream (it leads) and the others wait for its answer
// in the cache instead of generating it again. The leader marks the key
// pending in shared data (a timestamp, written with compare-and-swap: of
// two that race, one leads); a follower holds its request and the VM's
// tick looks at the cache for it every coalesceTick: the entry stored →
// answered as a hit; the mark gone (the leader's answer was not stored,
// or its client left) or cache.coalesce_wait passed → it goes upstream.
const (
	pendingPrefix = "autoglm:cache:pending:"
	coalesceTick  = 20 // milliseconds
)

func (s *stream) pendingKey() string { return pendingPrefix + s.cacheKey[len(cachePrefix):] }

// coalesce decides a miss: true when the request waits for another's
// answer (it is then held), false when it goes upstream itself.
func (s *stream) coalesce() bool {
	c := s.p.cfg.Cache
	if !c.Coalesce {
		return false
	}
	now := Now().UnixNano()
	key := s.pendingKey()
	v, cas, err := proxywasm.GetSharedData(key)
	if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
		return false
	}
	if pending(v, now, int64(c.CoalesceWait)) {
		s.wait(now)
		return true
	}
	var stamp [8]byte
	binary.LittleEndian.PutUint64(stamp[:], uint64(now))
	if err := proxywasm.SetSharedData(key, stamp[:], cas); errors.Is(err, types.ErrorStatusCasMismatch) {
		s.wait(now) // another request took the lead between the read and the write
		return true
	} else if err != nil {
		return false
	}
	s.leading = true
	return false
}

func pending(v []byte, now, wait int64) bool {
	return len(v) == 8 && now-int64(binary.LittleEndian.Uint64(v)) < wait
}

func (s *stream) wait(now int64) {
	s.waitUntil = now + int64(s.p.cfg.Cache.CoalesceWait)
	s.awaiting = true // not reused while the tick may still answer it
	s.p.waiters = append(s.p.waiters, s)
	s.p.m.coalesced.Increment(1)
}

// lead ends a leader's mark, once its answer is stored or will not be.
func (s *stream) lead() {
	if !s.leading {
		return
	}
	s.leading = false
	_ = proxywasm.SetSharedData(s.pendingKey(), nil, 0)
}

// OnTick answers or releases the waiting requests.
func (p *Plugin) OnTick() {
	if len(p.waiters) == 0 {
		return
	}
	now := Now().UnixNano()
	kept := p.waiters[:0]
	for _, s := range p.waiters {
		if s.ended { // the client left
			continue
		}
		if data, _, err := proxywasm.GetSharedData(s.cacheKey); err == nil {
			if e, ok := decodeEntry(data); ok && e.expires > now {
				_ = proxywasm.SetEffectiveContext(s.id)
				s.hit(e)
				continue
			}
		}
		v, _, _ := proxywasm.GetSharedData(s.pendingKey())
		if pending(v, now, int64(p.cfg.Cache.CoalesceWait)) && now < s.waitUntil {
			kept = append(kept, s)
			continue
		}
		// No answer to wait for: upstream after all.
		_ = proxywasm.SetEffectiveContext(s.id)
		s.miss()
		s.resume(s.forward())
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
}

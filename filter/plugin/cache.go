package plugin

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// The local tier lives in the proxy's shared data, common to all workers:
// an entry per key, and 16 indexes (by the key's first hex digit; key,
// size, expiry per line, least recently used first: a hit moves its line to
// the end, see touch) that each bound their share of the
// total size, so that a store rewrites a sixteenth of the index; shared
// data cannot delete, so an
// evicted entry is overwritten with an empty value.
const (
	cachePrefix = "autoglm:cache:"
	cacheIndex  = "autoglm:cache:index:"
	indexShards = 16
)

// entry is a stored response.
type entry struct {
	expires int64 // unix nanoseconds
	ctype   string
	body    []byte
}

func (e entry) encode() []byte {
	b := make([]byte, 10, 10+len(e.ctype)+len(e.body))
	binary.LittleEndian.PutUint64(b, uint64(e.expires))
	binary.LittleEndian.PutUint16(b[8:], uint16(len(e.ctype)))
	return append(append(b, e.ctype...), e.body...)
}

func decodeEntry(b []byte) (entry, bool) {
	if len(b) < 10 {
		return entry{}, false
	}
	n := int(binary.LittleEndian.Uint16(b[8:]))
	if len(b) < 10+n {
		return entry{}, false
	}
	// The content type is a view of b, like the body: b is the VM's own
	// copy of the value (a callout's or shared data's), which nothing
	// writes again.
	return entry{expires: int64(binary.LittleEndian.Uint64(b)), ctype: unsafe.String(unsafe.SliceData(b[10:]), n), body: b[10+n:]}, true
}

// cacheable: deterministic requests, or those that opt in; never those
// that opt out.
func (s *stream) cacheable() (ok bool, state string) {
	switch strings.ToLower(strings.TrimSpace(s.cacheControl)) {
	case "bypass", "no-cache", "no-store":
		return false, "BYPASS"
	case "cache":
		return true, ""
	}
	if !s.req.Deterministic() {
		return false, "BYPASS"
	}
	return true, ""
}

// lookup answers from the local tier; false lets the request go on.
func (s *stream) lookup() bool {
	ok, state := s.cacheable()
	if !ok {
		s.cacheState = state
		s.p.m.cacheBypass.Increment(1)
		return false
	}
	scope := s.tenant
	if s.p.cfg.Cache.Shared {
		scope = ""
	}
	// The API path and a pinned version select another answer.
	if s.path != s.p.cfg.Paths[0] || s.version != "" {
		scope += "\x00" + s.path + "\x00" + s.version
	}
	s.cacheKey = s.p.memo.cacheKey(&s.req, scope)
	data, _, err := proxywasm.GetSharedData(s.cacheKey)
	if err == nil {
		if e, ok := decodeEntry(data); ok && e.expires > Now().UnixNano() {
			s.touch()
			s.hit(e)
			return true
		}
	} else if !errors.Is(err, types.ErrorStatusNotFound) {
		s.p.m.stateErrors.Increment(1)
	}
	if s.p.cfg.Cache.Remote.Cluster != "" && s.remoteLookup() {
		return true
	}
	if s.coalesce() {
		return true
	}
	s.miss()
	return false
}

func (s *stream) miss() {
	s.cacheState = "MISS"
	s.p.m.cacheMiss.Increment(1)
}

// touch moves a hit entry to the young end of its index, so eviction —
// oldest first — is least recently used, not first stored: a hot entry
// survives a stream of cold stores. Each VM moves a key at most once per
// touchEvery (the move is a compare-and-swap of the index shard); an
// entry hit that often is never the oldest of its shard unless the shard
// takes its whole size in stores within touchEvery.
func (s *stream) touch() {
	now := Now().UnixNano()
	if last, ok := s.p.touched[s.cacheKey]; ok && now-last < touchEvery {
		return
	}
	if len(s.p.touched) >= maxTouched {
		clear(s.p.touched)
	}
	s.p.touched[s.cacheKey] = now
	err := s.casUpdate(cacheIndex+s.cacheKey[len(cachePrefix):len(cachePrefix)+1], false, func(old []byte) ([]byte, bool) {
		lines := parseIndex(old)
		for i, l := range lines {
			if l.key != s.cacheKey {
				continue
			}
			if i == len(lines)-1 {
				return nil, false // the youngest already
			}
			moved := append(append(lines[:i:i], lines[i+1:]...), l)
			return formatIndex(moved), true
		}
		return nil, false // not indexed (evicted meanwhile)
	})
	if err != nil {
		s.p.m.stateErrors.Increment(1)
	}
}

const (
	touchEvery = int64(100 * time.Millisecond)
	maxTouched = 4096
)

// remoteKey is the key in the remote tier (the sidecar's /v1/cache).
func (s *stream) remoteKey() string { return strings.TrimPrefix(s.cacheKey, cachePrefix) }

// remoteLookup asks the cache cluster, holding the request until it
// answers; any failure (error, timeout, not 200) is a miss: fail-open.
func (s *stream) remoteLookup() bool {
	r := s.p.cfg.Cache.Remote
	hs := s.callout([2]string{":method", "GET"}, [2]string{":path", "/v1/cache/" + s.remoteKey()}, [2]string{":authority", r.Authority})
	_, err := proxywasm.DispatchHttpCall(r.Cluster, hs, nil, nil, uint32(r.Timeout.Milliseconds()), func(_, bodySize, _ int) {
		s.awaiting = false
		status := calloutStatus()
		if status == "200" {
			if body, err := proxywasm.GetHttpCallResponseBody(0, bodySize); err == nil {
				if e, ok := decodeEntry(body); ok && e.expires > Now().UnixNano() {
					s.buf, s.ctype = e.body, e.ctype
					s.storeLocal(e.expires) // the next request on this proxy stays local
					s.hit(e)
					return
				}
			}
		} else if status == "" || status[0] == '5' {
			s.p.m.stateErrors.Increment(1)
		}
		if s.coalesce() {
			return // held until the request that leads answers
		}
		s.miss()
		s.forward()
		if err := proxywasm.ResumeHttpRequest(); err != nil {
			proxywasm.LogErrorf("autoglm filter: resuming after the cache lookup: %v", err)
		}
	})
	if err != nil {
		s.p.m.stateErrors.Increment(1)
		proxywasm.LogWarnf("autoglm filter: cache cluster %s: %v", r.Cluster, err)
		return false
	}
	s.awaiting = true
	return true
}

func (s *stream) hit(e entry) {
	s.done = true
	s.cacheState = "HIT"
	s.p.m.cacheHit.Increment(1)
	if s.reserved > 0 {
		s.settle(s.reserved) // a hit generates nothing
		s.reserved = 0
	}
	headers := [][2]string{{"content-type", e.ctype}, {HeaderCache, "HIT"}}
	if err := proxywasm.SendHttpResponse(200, headers, e.body, -1); err != nil {
		proxywasm.LogErrorf("autoglm filter: answering from the cache: %v", err)
	}
}

// store puts the recorded response in both tiers.
func (s *stream) store() {
	expires := Now().Add(s.p.cfg.Cache.TTL).UnixNano()
	val := s.storeLocal(expires)
	if r := s.p.cfg.Cache.Remote; r.Cluster != "" && val != nil {
		ttl := s.p.cfg.Cache.TTL / time.Second
		hs := s.callout([2]string{":method", "PUT"}, [2]string{":path", "/v1/cache/" + s.remoteKey()}, [2]string{":authority", r.Authority},
			[2]string{"content-type", "application/octet-stream"}, [2]string{"x-autoglm-cache-ttl", strconv.Itoa(int(max(ttl, 1)))})
		if _, err := proxywasm.DispatchHttpCall(r.Cluster, hs, val, nil, uint32(r.Timeout.Milliseconds()), func(int, int, int) {
			if st := calloutStatus(); len(st) == 0 || st[0] != '2' {
				proxywasm.LogWarnf("autoglm filter: storing in the cache cluster: status %q", st)
			}
		}); err != nil {
			proxywasm.LogWarnf("autoglm filter: cache cluster %s: %v", r.Cluster, err)
		}
	}
}

// storeLocal puts the response in the local tier, evicting the oldest
// entries past the size bound; it returns the stored value.
func (s *stream) storeLocal(expires int64) []byte {
	c := s.p.cfg.Cache
	now := Now()
	e := entry{expires: expires, ctype: s.ctype, body: s.buf}
	val := e.encode()
	var evicted []string
	bound := max(c.MaxBytes/indexShards, c.MaxEntryBytes)
	err := s.casUpdate(cacheIndex+s.cacheKey[len(cachePrefix):len(cachePrefix)+1], false, func(old []byte) ([]byte, bool) {
		evicted = evicted[:0]
		lines := parseIndex(old)
		kept := lines[:0]
		total := len(val)
		for _, l := range lines {
			if l.expires <= now.UnixNano() || l.key == s.cacheKey {
				evicted = append(evicted, l.key)
				continue
			}
			kept = append(kept, l)
			total += l.size
		}
		for len(kept) > 0 && total > bound {
			evicted = append(evicted, kept[0].key)
			total -= kept[0].size
			kept = kept[1:]
		}
		kept = append(kept, indexLine{key: s.cacheKey, size: len(val), expires: e.expires})
		return formatIndex(kept), true
	})
	if err != nil {
		s.p.m.stateErrors.Increment(1)
		proxywasm.LogWarnf("autoglm filter: cache index: %v", err)
		return nil
	}
	// Writes go through compare-and-swap too: cas 0 is "unconditional" in
	// Envoy but not in every host.
	put := func(k string, v []byte) error {
		return s.casUpdate(k, false, func([]byte) ([]byte, bool) { return v, true })
	}
	for _, k := range evicted {
		if k != s.cacheKey {
			_ = put(k, nil)
		}
	}
	if err := put(s.cacheKey, val); err != nil {
		s.p.m.stateErrors.Increment(1)
	}
	return val
}

type indexLine struct {
	key     string
	size    int
	expires int64
}

// An index is binary, a record per entry: the key's length (a byte), the
// key, its size (4 bytes) and expiry (8 bytes, unix nanoseconds), little
// endian. Reading one is a walk over the bytes: a text index parsed with
// strings.Fields and strconv cost ~1 ms a store in wasm once it held a
// few hundred entries.
func parseIndex(b []byte) []indexLine {
	var out []indexLine
	for len(b) > 0 {
		n := int(b[0])
		if len(b) < 1+n+12 {
			return out // a torn or foreign value: what was read so far
		}
		out = append(out, indexLine{
			key:     unsafe.String(&b[1], n), // a view: b is the VM's copy of the value
			size:    int(binary.LittleEndian.Uint32(b[1+n:])),
			expires: int64(binary.LittleEndian.Uint64(b[5+n:])),
		})
		b = b[1+n+12:]
	}
	return out
}

func formatIndex(lines []indexLine) []byte {
	n := 0
	for _, l := range lines {
		n += 1 + len(l.key) + 12
	}
	b := make([]byte, 0, n)
	for _, l := range lines {
		b = append(b, byte(len(l.key)))
		b = append(b, l.key...)
		b = binary.LittleEndian.AppendUint32(b, uint32(l.size))
		b = binary.LittleEndian.AppendUint64(b, uint64(l.expires))
	}
	return b
}

// calloutStatus is the :status of the callout being answered ("" when it
// failed or timed out: Envoy then calls back with no headers).
func calloutStatus() string {
	hs, _ := proxywasm.GetHttpCallResponseHeaders()
	for _, h := range hs {
		if h[0] == ":status" {
			return h[1]
		}
	}
	return ""
}

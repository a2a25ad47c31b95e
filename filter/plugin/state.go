package plugin

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// Shared data (proxy-wasm-cpp-host's SharedData::set, which Envoy uses)
// has compare-and-swap for values that exist, but no create-if-absent: a
// key that is absent is written whatever cas the caller gives, and cas 0
// writes unconditionally. Two workers that both find a tenant's state
// absent would both write it, and the later write would erase what the
// other took meanwhile (a request and a lease: a burst of 10 000 admitted
// 10 626 in Envoy's host with two worker threads). So a state that must
// be exact is created under a lock — a shared value that always exists,
// taken with compare-and-swap — by writing a marker that holds nothing
// (read as a full bucket); every take is then a compare-and-swap on the
// existing value, and nothing is ever taken in the write that creates it.
const (
	createLockKey = "autoglm:rl:create-lock"
	// createLockStale is how old a held lock is when a VM that died
	// holding it (a trap) is assumed: a holder keeps it for three host
	// calls.
	createLockStale = int64(time.Second)
	// createLockSpins bounds the reads of a held lock (each a host call
	// of well under a microsecond while its holder, on another worker
	// thread, does its three).
	createLockSpins = 4096
)

var (
	lockFree    = []byte{'U'}
	stateMarker = []byte{0} // a state with nothing taken yet
	errLockBusy = errors.New("the state creation lock stayed held")
)

// ensureCreateLock creates the lock at plugin start, before the VM serves
// a request: the only write of it that is not a compare-and-swap. (Two
// VMs starting at once may both write it; neither has taken it yet.)
func ensureCreateLock() {
	if _, _, err := proxywasm.GetSharedData(createLockKey); errors.Is(err, types.ErrorStatusNotFound) {
		_ = proxywasm.SetSharedData(createLockKey, lockFree, 0)
	}
}

// create writes key's marker unless the key exists, under the lock.
func (p *Plugin) create(key string) error {
	held := &p.lockVal
	for range createLockSpins {
		v, cas, err := proxywasm.GetSharedData(createLockKey)
		if errors.Is(err, types.ErrorStatusNotFound) {
			ensureCreateLock() // shared data was unavailable at plugin start
			continue
		}
		if err != nil {
			return err
		}
		now := Now().UnixNano()
		if len(v) == 9 && v[0] == 'L' && now-int64(binary.LittleEndian.Uint64(v[1:])) < createLockStale {
			continue // held
		}
		held[0] = 'L'
		binary.LittleEndian.PutUint64(held[1:], uint64(now))
		if err := proxywasm.SetSharedData(createLockKey, held[:], cas); errors.Is(err, types.ErrorStatusCasMismatch) {
			continue
		} else if err != nil {
			return err
		}
		// Held: no other VM creates a key until it is released.
		_, _, err = proxywasm.GetSharedData(key)
		if errors.Is(err, types.ErrorStatusNotFound) {
			err = proxywasm.SetSharedData(key, stateMarker, 0)
		}
		// Released only if still ours: a lock taken over as stale is
		// the new holder's. (A holder's stamp is unique: the lock
		// changes hands within createLockStale only by a release.)
		if v, cas, gerr := proxywasm.GetSharedData(createLockKey); gerr == nil && string(v) == string(held[:]) {
			_ = proxywasm.SetSharedData(createLockKey, lockFree, cas)
		}
		return err
	}
	return errLockBusy
}

// casUpdate applies f to a shared-data value with compare-and-swap,
// retrying on conflicts up to the configured bound. An absent value is
// created first: under the creation lock when exact (throttle state),
// otherwise by the write itself (cache entries, where a lost concurrent
// write costs an entry, not a limit).
func (s *stream) casUpdate(key string, exact bool, f func(old []byte) ([]byte, bool)) error {
	created := false
	for i := 0; i < s.p.cfg.Throttle.MaxCASRetries; i++ {
		old, cas, err := proxywasm.GetSharedData(key)
		if errors.Is(err, types.ErrorStatusNotFound) && exact {
			if created {
				return errors.New("the created state is absent")
			}
			if err := s.p.create(key); err != nil {
				return err
			}
			created = true
			i-- // a creation is no conflict
			continue
		}
		if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
			return err
		}
		next, write := f(old)
		if !write {
			return nil
		}
		err = proxywasm.SetSharedData(key, next, cas)
		if err == nil {
			return nil
		}
		if !errors.Is(err, types.ErrorStatusCasMismatch) {
			return err
		}
	}
	return errConflicts
}

// errConflicts: other workers changed the value max_cas_retries times in
// a row. The state works — the tenant's own concurrency keeps it busy —
// so this is not a failure to open on (that would admit past the limit
// exactly when a tenant pushes hardest): the request is refused as
// throttled, to be retried.
var errConflicts = errors.New("too many compare-and-swap conflicts")

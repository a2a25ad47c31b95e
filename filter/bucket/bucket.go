// Package bucket is a token bucket whose state is a 16-byte value, so that
// every worker of an Envoy proxy can share it through proxy-wasm shared
// data with compare-and-swap.
package bucket

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// State is a bucket's level at an instant.
type State struct {
	Tokens float64
	At     int64 // unix nanoseconds
}

// Size is the encoded size.
const Size = 16

// Encode returns the 16-byte form.
func (s State) Encode() []byte {
	b := make([]byte, Size)
	s.Put(b)
	return b
}

// Put writes the 16-byte form to b[:16].
func (s State) Put(b []byte) {
	binary.LittleEndian.PutUint64(b[:Size], math.Float64bits(s.Tokens))
	binary.LittleEndian.PutUint64(b[8:], uint64(s.At))
}

// Decode reads the 16-byte form; an empty value is a new bucket (ok false).
func Decode(b []byte) (s State, ok bool, err error) {
	if len(b) == 0 {
		return State{}, false, nil
	}
	if len(b) != Size {
		return State{}, false, errors.New("bucket: state is not 16 bytes")
	}
	s = State{Tokens: math.Float64frombits(binary.LittleEndian.Uint64(b)), At: int64(binary.LittleEndian.Uint64(b[8:]))}
	if math.IsNaN(s.Tokens) || math.IsInf(s.Tokens, 0) {
		return State{}, false, errors.New("bucket: state is not a number")
	}
	return s, true, nil
}

// Limit is a bucket's refill rate (tokens per second) and size.
type Limit struct {
	Rate, Burst float64
}

// Level is the bucket's level at now: refilled since s.At, at most Burst.
// A bucket never seen (ok false) is full.
func (l Limit) Level(s State, ok bool, now time.Time) float64 {
	if !ok {
		return l.Burst
	}
	el := float64(now.UnixNano()-s.At) / 1e9
	if el < 0 {
		el = 0 // another worker's clock a little ahead
	}
	return math.Min(l.Burst, s.Tokens+el*l.Rate)
}

// Take takes cost from the bucket when at least cost + floor would be
// left... that is, when level − cost ≥ floor (floor is a reserve the
// caller may not use, for priorities). It returns the new state, whether
// it was taken, the level after (or now, if refused), and when a refused
// take could succeed.
func (l Limit) Take(s State, ok bool, now time.Time, cost, floor float64) (next State, taken bool, level float64, retry time.Duration) {
	level = l.Level(s, ok, now)
	if level-cost >= floor {
		level -= cost
		return State{Tokens: level, At: now.UnixNano()}, true, level, 0
	}
	if l.Rate <= 0 {
		return s, false, level, time.Hour
	}
	need := cost + floor - level
	return s, false, level, time.Duration(need / l.Rate * 1e9)
}

// Adjust adds delta (negative: an extra charge, which may leave the
// bucket in debt) at now.
func (l Limit) Adjust(s State, ok bool, now time.Time, delta float64) State {
	return State{Tokens: math.Min(l.Burst, l.Level(s, ok, now)+delta), At: now.UnixNano()}
}

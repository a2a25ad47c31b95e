package grammar

import (
	"encoding/binary"
	"math/bits"
)

// frame is one value being matched: its node and where in it the matcher
// is. Frames are values, so a matcher is copied by copying its stack.
type frame struct {
	n    *node
	st   uint8  // state within the node's kind
	aux  uint8  // string: bytes left of an escape or a UTF-8 character; number: digits of the current run
	lead uint8  // string: the lead byte of a UTF-8 character whose first continuation is next
	pos  int32  // literal, key and number bytes
	cnt  int32  // array items, string characters (clamped once no limit depends on them)
	cur  int16  // object: the property being written; seq: the part
	seen uint64 // object: properties written
	cand uint64 // literal, key and branch candidates
}

// Object states.
const (
	oStart    = iota // expects '{'
	oOpen            // after '{'
	oKey             // in a declared key
	oValue           // waiting for a property's value
	oFreeKey         // waiting for a free key's string
	oColon           // expects ':' after a free key
	oAfter           // after a value
	oComma           // after ','
	oWaitPart        // seq: waiting for a part's value
)

// Results of a step.
const (
	rReject   = iota
	rConsumed // the byte is taken, the value goes on
	rDone     // the byte is taken and ends the value
	rPushed   // a child value was opened: it takes the byte
	rEnd      // the value ended before the byte: its parent takes it
)

// Matcher follows one output through a grammar, a byte at a time.
type Matcher struct {
	g     *Grammar
	stack []frame
}

// Matcher starts a match of the whole document.
func (g *Grammar) Matcher() *Matcher {
	return &Matcher{g: g, stack: append(make([]frame, 0, 8), frame{n: g.root})}
}

// copyFrom makes m the same state as o, reusing m's stack.
func (m *Matcher) copyFrom(o *Matcher) {
	m.g = o.g
	m.stack = append(m.stack[:0], o.stack...)
}

// Feed advances past b; false means b cannot come next (the matcher is
// then left in an unspecified state and must not be used again).
func (m *Matcher) Feed(b byte) bool {
	for len(m.stack) > 0 {
		switch m.step(len(m.stack)-1, b) {
		case rReject:
			return false
		case rConsumed:
			return true
		case rPushed:
			continue
		case rDone:
			m.pop()
			return true
		case rEnd:
			m.pop()
		}
	}
	return false
}

// Write feeds every byte of p.
func (m *Matcher) Write(p []byte) bool {
	for _, b := range p {
		if !m.Feed(b) {
			return false
		}
	}
	return true
}

// Done says whether what was fed is a complete document.
func (m *Matcher) Done() bool {
	return len(m.stack) == 0 || (len(m.stack) == 1 && canEnd(&m.stack[0]))
}

// Closed says whether the document is complete and can take no more bytes.
func (m *Matcher) Closed() bool { return len(m.stack) == 0 }

// MinRemaining is the fewest bytes that complete the document.
func (m *Matcher) MinRemaining() int {
	t := 0
	for i := range m.stack {
		t = sat(t, rest(&m.stack[i]))
	}
	return t
}

// pop ends the top value and tells its parents, which may end with it.
func (m *Matcher) pop() {
	m.stack = m.stack[:len(m.stack)-1]
	for len(m.stack) > 0 && childDone(&m.stack[len(m.stack)-1]) {
		m.stack = m.stack[:len(m.stack)-1]
	}
}

func (m *Matcher) push(n *node, st uint8) bool {
	if len(m.stack) >= maxDepth {
		return false
	}
	m.stack = append(m.stack, frame{n: n, st: st})
	return true
}

// childDone records that the value f waited for is complete and says
// whether f is complete with it.
func childDone(f *frame) bool {
	switch f.n.kind {
	case kObject:
		if f.st == oFreeKey {
			f.st = oColon
		} else {
			f.st = oAfter
		}
	case kArray:
		f.st = oAfter
	case kSeq:
		f.cur++
		f.pos, f.st = 0, 0
		return int(f.cur) == len(f.n.parts)
	}
	return false
}

func (m *Matcher) step(i int, b byte) int {
	f := &m.stack[i]
	n := f.n
	switch n.kind {
	case kAny:
		switch {
		case b == '{':
			f.n = anyObject
		case b == '[':
			f.n = anyArray
		case b == '"':
			f.n = anyString
		case b == '-' || (b >= '0' && b <= '9'):
			f.n = anyNumber
		case b == 't' || b == 'f':
			f.n = boolNode
		case b == 'n':
			f.n = nullNode
		default:
			return rReject
		}
		return m.step(i, b)
	case kAnyOf:
		for _, a := range n.alts {
			if starts(a, b) {
				f.n = a
				return m.step(i, b)
			}
		}
		return rReject
	case kLiteral:
		return stepLiteral(f, b)
	case kString:
		return stepString(f, b)
	case kNumber, kInteger:
		return stepNumber(f, b)
	case kObject:
		return m.stepObject(f, b)
	case kArray:
		return m.stepArray(f, b)
	case kSeq:
		p := n.parts[f.cur]
		if p.n != nil {
			f.st = oWaitPart
			if !m.push(p.n, 0) {
				return rReject
			}
			return rPushed
		}
		if p.lit[f.pos] != b {
			return rReject
		}
		f.pos++
		if int(f.pos) == len(p.lit) {
			f.cur++
			f.pos = 0
			if int(f.cur) == len(n.parts) {
				return rDone
			}
		}
		return rConsumed
	case kBranch:
		if f.st == 0 {
			f.st, f.cand = 1, all(len(n.alts))
		}
		next := narrow(f.cand, f.pos, b, func(j int) []byte { return n.alts[j].parts[0].lit })
		if next == 0 {
			return rReject
		}
		f.pos++
		if bits.OnesCount64(next) == 1 {
			j := bits.TrailingZeros64(next)
			if alt := n.alts[j]; int(f.pos) == len(alt.parts[0].lit) {
				*f = frame{n: alt, cur: 1}
				if len(alt.parts) == 1 {
					return rDone
				}
				return rConsumed
			}
		}
		f.cand = next
		return rConsumed
	}
	return rReject
}

// narrow keeps the candidates whose text has b at pos.
func narrow(cand uint64, pos int32, b byte, text func(int) []byte) uint64 {
	var next uint64
	for c := cand; c != 0; c &= c - 1 {
		j := bits.TrailingZeros64(c)
		if l := text(j); int(pos) < len(l) && l[pos] == b {
			next |= 1 << j
		}
	}
	return next
}

func all(n int) uint64 {
	if n >= 64 {
		return ^uint64(0)
	}
	return 1<<n - 1
}

func stepLiteral(f *frame, b byte) int {
	lits := f.n.lits
	if f.st == 0 {
		f.st, f.cand = 1, all(len(lits))
	}
	var next uint64
	complete := false
	for c := f.cand; c != 0; c &= c - 1 {
		j := bits.TrailingZeros64(c)
		l := lits[j]
		if int(f.pos) == len(l) {
			complete = true
		} else if l[f.pos] == b {
			next |= 1 << j
		}
	}
	if next == 0 {
		if complete {
			return rEnd
		}
		return rReject
	}
	f.cand = next
	f.pos++
	for c := next; c != 0; c &= c - 1 {
		if len(lits[bits.TrailingZeros64(c)]) > int(f.pos) {
			return rConsumed
		}
	}
	return rDone
}

// String states.
const (
	sStart = iota
	sIn
	sEscape
	sUTF8
	sHex
)

func stepString(f *frame, b byte) int {
	n := f.n
	switch f.st {
	case sStart:
		if b != '"' {
			return rReject
		}
		f.st = sIn
		return rConsumed
	case sIn:
		if b == '"' {
			if int(f.cnt) < n.minLen {
				return rReject
			}
			return rDone
		}
		if b < 0x20 || (n.maxLen >= 0 && int(f.cnt) >= n.maxLen) {
			return rReject
		}
		switch {
		case b == '\\':
			f.st = sEscape
			return rConsumed
		case b < 0x80:
		case b >= 0xC2 && b <= 0xDF:
			f.st, f.aux, f.lead = sUTF8, 1, b
		case b >= 0xE0 && b <= 0xEF:
			f.st, f.aux, f.lead = sUTF8, 2, b
		case b >= 0xF0 && b <= 0xF4:
			f.st, f.aux, f.lead = sUTF8, 3, b
		default:
			return rReject
		}
		countChar(f)
		return rConsumed
	case sEscape:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			f.st = sIn
			countChar(f)
			return rConsumed
		case 'u':
			f.st, f.aux = sHex, 4
			return rConsumed
		}
		return rReject
	case sUTF8:
		lo, hi := byte(0x80), byte(0xBF)
		switch f.lead { // the first continuation byte's range (RFC 3629)
		case 0xE0:
			lo = 0xA0
		case 0xED:
			hi = 0x9F
		case 0xF0:
			lo = 0x90
		case 0xF4:
			hi = 0x8F
		}
		if b < lo || b > hi {
			return rReject
		}
		f.lead = 0
		if f.aux--; f.aux == 0 {
			f.st = sIn
		}
		return rConsumed
	case sHex:
		if !(b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F') {
			return rReject
		}
		if f.aux--; f.aux == 0 {
			f.st = sIn
			countChar(f)
		}
		return rConsumed
	}
	return rReject
}

// countChar counts a string's character; past every limit the count stops
// mattering and is clamped, so equal states have equal keys.
func countChar(f *frame) {
	f.cnt++
	if f.n.maxLen < 0 && int(f.cnt) > f.n.minLen {
		f.cnt = int32(f.n.minLen)
	}
}

// Number states.
const (
	nStart = iota
	nMinus
	nInt
	nZero
	nDot
	nFrac
	nE
	nESign
	nExp
)

// Digits of one run in a number: 15 integer or fraction digits (exact in
// a float64), 2 exponent digits (no overflow to infinity).
const (
	maxDigits    = 15
	maxExpDigits = 2
)

func stepNumber(f *frame, b byte) int {
	digit := b >= '0' && b <= '9'
	integer := f.n.kind == kInteger
	if f.pos >= maxNumBytes {
		if canEnd(f) {
			return rEnd
		}
		return rReject
	}
	next := -1
	switch f.st {
	case nStart, nMinus:
		switch {
		case b == '-' && f.st == nStart:
			next = nMinus
		case b == '0':
			next = nZero
		case digit:
			next, f.aux = nInt, 0
		}
	case nInt, nZero:
		switch {
		case digit && f.st == nInt && f.aux < maxDigits:
			next = nInt
		case b == '.' && !integer:
			next, f.aux = nDot, 0
		case (b == 'e' || b == 'E') && !integer:
			next = nE
		default:
			return rEnd
		}
	case nDot:
		if digit {
			next, f.aux = nFrac, 0
		}
	case nFrac:
		switch {
		case digit && f.aux < maxDigits:
			next = nFrac
		case b == 'e' || b == 'E':
			next = nE
		default:
			return rEnd
		}
	case nE:
		switch {
		case b == '+' || b == '-':
			next = nESign
		case digit:
			next, f.aux = nExp, 0
		}
	case nESign:
		if digit {
			next, f.aux = nExp, 0
		}
	case nExp:
		if digit && f.aux < maxExpDigits {
			next = nExp
		} else {
			return rEnd
		}
	}
	if next < 0 {
		return rReject
	}
	if next == nInt || next == nFrac || next == nExp {
		f.aux++ // runs start at 0 where they are entered
	}
	f.st = uint8(next)
	f.pos++
	return rConsumed
}

func (m *Matcher) stepObject(f *frame, b byte) int {
	n := f.n
	switch f.st {
	case oStart:
		if b != '{' {
			return rReject
		}
		f.st = oOpen
		return rConsumed
	case oOpen, oComma:
		if b == '}' && f.st == oOpen && n.required == 0 {
			return rDone
		}
		if b != '"' {
			return rReject
		}
		if n.addl != nil {
			f.st = oFreeKey
			if !m.push(anyString, sIn) {
				return rReject
			}
			return rConsumed
		}
		if f.cand = all(len(n.props)) &^ f.seen; f.cand == 0 {
			return rReject
		}
		f.st, f.pos = oKey, 0
		return rConsumed
	case oKey:
		next := narrow(f.cand, f.pos, b, func(j int) []byte { return n.props[j].key })
		if next == 0 {
			return rReject
		}
		f.cand = next
		f.pos++
		// Keys end with `":`, so none is a prefix of another.
		if bits.OnesCount64(next) == 1 {
			j := bits.TrailingZeros64(next)
			if int(f.pos) == len(n.props[j].key) {
				f.seen |= 1 << j
				f.cur, f.st, f.cand, f.pos = int16(j), oValue, 0, 0
				if !m.push(n.props[j].n, 0) {
					return rReject
				}
			}
		}
		return rConsumed
	case oColon:
		if b != ':' {
			return rReject
		}
		f.st = oValue
		if !m.push(n.addl, 0) {
			return rReject
		}
		return rConsumed
	case oAfter:
		switch {
		case b == ',' && (n.addl != nil || all(len(n.props))&^f.seen != 0):
			f.st = oComma
			return rConsumed
		case b == '}' && n.required&^f.seen == 0:
			return rDone
		}
	}
	return rReject
}

func (m *Matcher) stepArray(f *frame, b byte) int {
	n := f.n
	switch f.st {
	case oStart:
		if b != '[' {
			return rReject
		}
		f.st = oOpen
		return rConsumed
	case oOpen, oComma:
		if b == ']' && f.st == oOpen && n.minItems == 0 {
			return rDone
		}
		if n.maxItems >= 0 && int(f.cnt) >= n.maxItems {
			return rReject
		}
		f.cnt++
		if n.maxItems < 0 && int(f.cnt) > n.minItems {
			f.cnt = int32(n.minItems)
		}
		f.st = oValue
		if !m.push(n.items, 0) {
			return rReject
		}
		return rPushed
	case oAfter:
		switch {
		case b == ',' && (n.maxItems < 0 || int(f.cnt) < n.maxItems):
			f.st = oComma
			return rConsumed
		case b == ']' && int(f.cnt) >= n.minItems:
			return rDone
		}
	}
	return rReject
}

// canEnd says whether a value without a closing byte (a number, a literal
// that may go on) is complete as it stands.
func canEnd(f *frame) bool {
	switch f.n.kind {
	case kNumber, kInteger:
		return f.st == nInt || f.st == nZero || f.st == nFrac || f.st == nExp
	case kLiteral:
		if f.st == 0 {
			return false
		}
		for c := f.cand; c != 0; c &= c - 1 {
			if len(f.n.lits[bits.TrailingZeros64(c)]) == int(f.pos) {
				return true
			}
		}
	}
	return false
}

// rest is the fewest bytes that complete f; for a frame waiting on a child,
// those after the child is complete.
func rest(f *frame) int {
	n := f.n
	switch n.kind {
	case kAny, kAnyOf:
		return n.min
	case kLiteral:
		if f.st == 0 {
			return n.min
		}
		r := maxInt
		for c := f.cand; c != 0; c &= c - 1 {
			r = min(r, len(n.lits[bits.TrailingZeros64(c)])-int(f.pos))
		}
		return r
	case kString:
		need := max(0, n.minLen-int(f.cnt))
		switch f.st {
		case sStart:
			return n.min
		case sIn:
			return 1 + need
		case sEscape:
			return 2 + max(0, need-1)
		case sUTF8:
			return int(f.aux) + 1 + need
		case sHex:
			return int(f.aux) + 1 + max(0, need-1)
		}
	case kNumber, kInteger:
		switch f.st {
		case nInt, nZero, nFrac, nExp:
			return 0
		}
		return 1
	case kObject:
		return restObject(f)
	case kArray:
		need := max(0, n.minItems-int(f.cnt))
		per := sat(1, n.items.min)
		switch f.st {
		case oStart:
			return n.min
		case oOpen:
			return n.min - 1
		case oComma:
			return sat(sat(n.items.min, mul(max(0, need-1), per)), 1)
		}
		return sat(mul(need, per), 1)
	case kSeq:
		r := 0
		if f.st != oWaitPart {
			if p := n.parts[f.cur]; p.n != nil {
				r = p.n.min
			} else {
				r = len(p.lit) - int(f.pos)
			}
		}
		return sat(r, restParts(n, int(f.cur)+1))
	case kBranch:
		if f.st == 0 {
			return n.min
		}
		r := maxInt
		for c := f.cand; c != 0; c &= c - 1 {
			alt := n.alts[bits.TrailingZeros64(c)]
			r = min(r, sat(len(alt.parts[0].lit)-int(f.pos), restParts(alt, 1)))
		}
		return r
	}
	return 0
}

const maxInt = 1<<31 - 1

func restParts(n *node, from int) int {
	r := 0
	for _, p := range n.parts[from:] {
		if p.n != nil {
			r = sat(r, p.n.min)
		} else {
			r = sat(r, len(p.lit))
		}
	}
	return r
}

func restObject(f *frame) int {
	n := f.n
	if n.addl != nil {
		switch f.st {
		case oStart:
			return n.min
		case oComma:
			return sat(4, n.addl.min)
		case oFreeKey, oColon:
			return sat(2, n.addl.min)
		}
		return 1
	}
	switch f.st {
	case oStart:
		return n.min
	case oOpen:
		return sat(restAfter(n, 0), 1)
	case oValue, oAfter:
		return sat(restAfter(n, f.seen), 1)
	case oComma, oKey:
		r := maxInt
		for c := f.cand; c != 0; c &= c - 1 {
			j := bits.TrailingZeros64(c)
			p := n.props[j]
			k := len(p.key) + 1 // the quote
			if f.st == oKey {
				k = len(p.key) - int(f.pos)
			}
			r = min(r, sat(sat(k, p.n.min), sat(restAfter(n, f.seen|1<<j), 1)))
		}
		if f.st == oComma && f.cand == 0 { // candidates are set when the key starts
			for j, p := range n.props {
				if f.seen&(1<<j) == 0 {
					r = min(r, sat(sat(len(p.key)+1, p.n.min), sat(restAfter(n, f.seen|1<<j), 1)))
				}
			}
		}
		return r
	}
	return 1
}

// key appends a binary form of the matcher's state: equal keys, equal
// futures.
func (m *Matcher) key(dst []byte) []byte {
	for i := range m.stack {
		f := &m.stack[i]
		dst = binary.LittleEndian.AppendUint32(dst, uint32(int32(f.n.id)))
		dst = append(dst, f.st, f.aux, f.lead)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(f.pos))
		dst = binary.LittleEndian.AppendUint32(dst, uint32(f.cnt))
		dst = binary.LittleEndian.AppendUint16(dst, uint16(f.cur))
		dst = binary.LittleEndian.AppendUint64(dst, f.seen)
		dst = binary.LittleEndian.AppendUint64(dst, f.cand)
	}
	return dst
}

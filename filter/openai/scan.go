package openai

import (
	"bytes"
	"encoding/binary"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// A hand-written JSON reader for the few fields the filter needs.
// encoding/json decodes a 200-byte chat request in ~9 µs natively but
// ~130 µs compiled to wasm and run in wazero (reflection, maps and an
// indirect call per byte), which was most of the filter's cost per
// request. This reader accepts exactly what encoding/json accepts (RFC 8259,
// invalid UTF-8 in strings read as U+FFFD) — FuzzParse checks it against
// encoding/json — and allocates only for strings with escapes.

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// kind is a JSON value's type.
type kind byte

const (
	kInvalid kind = iota
	kObject
	kArray
	kString
	kNumber
	kTrue
	kFalse
	kNull
)

// span is a value's bytes in the body.
type span struct {
	k    kind
	from int
	to   int
}

type scanner struct {
	b     []byte
	i     int
	depth int
}

func (s *scanner) ws() {
	for s.i < len(s.b) && space[s.b[s.i]] {
		s.i++
	}
}

// space and plain classify bytes: JSON white space, and string bytes
// that need no attention (not a quote, a backslash, a control character
// or the start of a multi-byte character).
var space, plain [256]bool

func init() {
	for _, c := range " \t\n\r" {
		space[c] = true
	}
	for c := 0x20; c < 0x80; c++ {
		plain[c] = c != '"' && c != '\\'
	}
}

// value reads one value (after white space) and returns its span.
func (s *scanner) value() (span, bool) {
	s.ws()
	if s.i >= len(s.b) {
		return span{}, false
	}
	from := s.i
	var k kind
	var ok bool
	switch c := s.b[s.i]; {
	case c == '{':
		k, ok = kObject, s.object()
	case c == '[':
		k, ok = kArray, s.array()
	case c == '"':
		k = kString
		_, _, ok = s.str()
	case c == '-' || (c >= '0' && c <= '9'):
		k, ok = kNumber, s.number()
	case c == 't':
		k, ok = kTrue, s.lit("true")
	case c == 'f':
		k, ok = kFalse, s.lit("false")
	case c == 'n':
		k, ok = kNull, s.lit("null")
	}
	return span{k: k, from: from, to: s.i}, ok
}

func (s *scanner) lit(w string) bool {
	if len(s.b)-s.i < len(w) || string(s.b[s.i:s.i+len(w)]) != w {
		return false
	}
	s.i += len(w)
	return true
}

// number reads a number with JSON's grammar.
func (s *scanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	s.i = i
	return true
}

// str reads a string at s.i (a quote) and returns its contents between
// the quotes and whether they hold an escape or a byte ≥ 0x80 (then they
// need decoding).
func (s *scanner) str() (raw []byte, complex, ok bool) {
	b := s.b
	i := s.i + 1
	for i < len(b) {
		// Eight bytes at a time while none needs attention: a byte loop
		// compiled to wasm costs ~11 ns a byte in wazero.
		for i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i == len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			raw = b[s.i+1 : i]
			s.i = i + 1
			return raw, complex, true
		case c == '\\':
			complex = true
			if i+1 >= len(b) {
				return nil, false, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return nil, false, false
				}
				for _, h := range b[i+2 : i+6] {
					if unhex(h) < 0 {
						return nil, false, false
					}
				}
				i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			if c >= 0x80 {
				complex = true
			}
			i++
		}
	}
	return nil, false, false
}

// object reads an object.
func (s *scanner) object() bool {
	if s.depth++; s.depth > maxDepth {
		return false
	}
	s.i++ // '{'
	for first := true; ; first = false {
		_, _, done, ok := s.nextKey(first)
		if !ok {
			return false
		}
		if done {
			return true
		}
		if _, ok := s.value(); !ok {
			return false
		}
	}
}

// array reads an array.
func (s *scanner) array() bool {
	if s.depth++; s.depth > maxDepth {
		return false
	}
	s.i++ // '['
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return true
	}
	for {
		if _, ok := s.value(); !ok {
			return false
		}
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

// nextKey reads up to the next member's value in an object being read
// (after its '{' when first, else after a member's value): the key's
// contents, or done when the object ends there.
func (s *scanner) nextKey(first bool) (key []byte, complex, done, ok bool) {
	s.ws()
	if s.i >= len(s.b) {
		return nil, false, false, false
	}
	if s.b[s.i] == '}' {
		s.i++
		s.depth--
		return nil, false, true, true
	}
	if !first {
		if s.b[s.i] != ',' {
			return nil, false, false, false
		}
		s.i++
		s.ws()
	}
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, false, false
	}
	if key, complex, ok = s.str(); !ok {
		return nil, false, false, false
	}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return nil, false, false, false
	}
	s.i++
	return key, complex, false, true
}

// textView is text, without a copy when the string needs no decoding.
func textView(b []byte, v span) string {
	raw := b[v.from+1 : v.to-1]
	for _, c := range raw {
		if c == '\\' || c >= 0x80 {
			return string(unquote(nil, raw))
		}
	}
	return view(raw)
}

func unhex(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		h := unhex(c)
		if h < 0 {
			return -1
		}
		r = r<<4 | h
	}
	return r
}

// unquote appends the decoded contents of a string already validated by
// str: escapes resolved, lone surrogates and invalid UTF-8 as U+FFFD (as
// encoding/json does).
func unquote(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\':
			switch raw[i+1] {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := hex4(raw[i+2:])
				i += 6
				if utf16.IsSurrogate(r) {
					if i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						if d := utf16.DecodeRune(r, hex4(raw[i+2:])); d != utf8.RuneError {
							dst = utf8.AppendRune(dst, d)
							i += 6
							continue
						}
					}
					r = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, r)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, raw[i+1])
			}
			i += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, n := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && n == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, raw[i:i+n]...)
			}
			i += n
		}
	}
	return dst
}

// estimate reads a value like value and counts its text, as a prompt or
// messages value: a token per 4 characters of a string; in arrays, 4 per
// message (an object with a non-null role) plus its content, and the text
// of other objects (content parts: {"type":"text","text":...}).
func (s *scanner) estimate(inArray bool) (span, int, bool) {
	s.ws()
	if s.i >= len(s.b) {
		return span{}, 0, false
	}
	from := s.i
	switch s.b[s.i] {
	case '"':
		raw, complex, ok := s.str()
		n := len(raw)
		if complex {
			n = utf8.RuneCount(unquote(nil, raw))
		}
		return span{kString, from, s.i}, (n + 3) / 4, ok
	case '[':
		if s.depth++; s.depth > maxDepth {
			return span{}, 0, false
		}
		s.i++
		s.ws()
		total := 0
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			s.depth--
			return span{kArray, from, s.i}, 0, true
		}
		for {
			_, n, ok := s.estimate(true)
			if !ok {
				return span{}, 0, false
			}
			total += n
			s.ws()
			if s.i >= len(s.b) {
				return span{}, 0, false
			}
			switch s.b[s.i] {
			case ',':
				s.i++
			case ']':
				s.i++
				s.depth--
				return span{kArray, from, s.i}, total, true
			default:
				return span{}, 0, false
			}
		}
	case '{':
		if s.depth++; s.depth > maxDepth {
			return span{}, 0, false
		}
		s.i++
		var role kind
		content, textN := 0, 0
		for first := true; ; first = false {
			key, complex, done, ok := s.nextKey(first)
			if !ok {
				return span{}, 0, false
			}
			if done {
				break
			}
			if complex {
				key = unquote(nil, key)
			}
			switch field(key) {
			case fContent:
				_, content, ok = s.estimate(false)
			case fText:
				_, textN, ok = s.estimate(false)
			case fRole:
				var v span
				v, ok = s.value()
				role = v.k
			default:
				_, ok = s.value()
			}
			if !ok {
				return span{}, 0, false
			}
		}
		v := span{kObject, from, s.i}
		if inArray && role != kInvalid && role != kNull {
			return v, 4 + content, true
		}
		return v, textN, true
	}
	v, ok := s.value()
	return v, 0, ok
}

// Fields the reader looks for.
const (
	fOther = iota
	fModel
	fStream
	fMaxTokens
	fMaxCompletion
	fTemperature
	fMessages
	fPrompt
	fRole
	fContent
	fText
)

// field names a decoded object key; by length first, which compiled to
// wasm saves a call per comparison.
func field(k []byte) int {
	switch len(k) {
	case 4:
		switch string(k) {
		case "role":
			return fRole
		case "text":
			return fText
		}
	case 5:
		if string(k) == "model" {
			return fModel
		}
	case 6:
		switch string(k) {
		case "stream":
			return fStream
		case "prompt":
			return fPrompt
		}
	case 7:
		if string(k) == "content" {
			return fContent
		}
	case 8:
		if string(k) == "messages" {
			return fMessages
		}
	case 10:
		if string(k) == "max_tokens" {
			return fMaxTokens
		}
	case 11:
		if string(k) == "temperature" {
			return fTemperature
		}
	case 21:
		if string(k) == "max_completion_tokens" {
			return fMaxCompletion
		}
	}
	// Not an exact name: the sidecar (encoding/json) matches field names
	// without case, Unicode's simple folding included (the Kelvin sign is
	// a k), so the filter reads the same member as the same field. A
	// lower-case ASCII key cannot fold to a name it is not: only others
	// are compared (the common unknown keys — n, stop, user — cost nothing).
	if !lowerASCII(k) {
		for _, f := range foldFields {
			if bytes.EqualFold(k, []byte(f.name)) {
				return f.f
			}
		}
	}
	return fOther
}

// lowerASCII reports a key of lower-case ASCII (and no letters that fold):
// two lowerASCII keys are equal without case only when equal byte for byte.
func lowerASCII(k []byte) bool {
	for _, c := range k {
		if c >= 0x80 || c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return true
}

var foldFields = [...]struct {
	name string
	f    int
}{{"role", fRole}, {"text", fText}, {"model", fModel}, {"stream", fStream}, {"prompt", fPrompt}, {"content", fContent},
	{"messages", fMessages}, {"max_tokens", fMaxTokens}, {"temperature", fTemperature}, {"max_completion_tokens", fMaxCompletion}}

// special8 reports whether any of the 8 bytes in x is a quote, a
// backslash, a control character or ≥ 0x80 (the classic "has a zero
// byte" test: (v − 0x01…) & ^v & 0x80… is non-zero exactly when a byte
// of v is zero).
func special8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	zero := func(v uint64) uint64 { return (v - ones) & ^v & highs }
	return (x&highs | (x-0x20*ones)&^x&highs | zero(x^'"'*ones) | zero(x^'\\'*ones)) != 0
}

// view is b as a string without a copy, for the strconv parsers (whose
// errors, which would keep it, are dropped): a copy is an allocation,
// ~0.5 µs in wasm. b must not change while the string is in use.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

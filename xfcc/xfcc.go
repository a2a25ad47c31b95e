// Package xfcc reads Envoy's x-forwarded-client-cert header. It imports
// nothing, so both the wasm filter and the sidecar use it.
//
// The grammar is Envoy's (config/http/xfcc docs, "x-forwarded-client-cert"):
// the value is a comma-separated list of elements, one per proxy, each
// proxy appending its own client's element at the end; an element is a
// semicolon-separated list of key=value pairs; keys are case-insensitive;
// a value that contains ',', ';', '=' or '"' is double-quoted, with '"'
// inside written \" (Envoy itself quotes the Subject always and writes URI
// and DNS SANs as they are). Parsing is strict: a value that does not follow the
// grammar is an error, never a best guess — a client-supplied element with
// an unbalanced quote would otherwise swallow the element the proxy
// appended, and the client would be taken for whoever it named.
package xfcc

import (
	"errors"
	"strings"
)

// Pair is one key=value of an element (the value unquoted, unescaped).
type Pair struct{ Key, Value string }

// Element is what one proxy added.
type Element []Pair

// Get is the value of key (case-insensitive) and whether it occurs; a
// key that occurs more than once is ambiguous: ok false, dup true.
func (e Element) Get(key string) (v string, ok, dup bool) {
	for _, p := range e {
		if strings.EqualFold(p.Key, key) {
			if ok {
				return "", false, true
			}
			v, ok = p.Value, true
		}
	}
	return v, ok, false
}

// Errors.
var (
	ErrMalformed = errors.New("malformed x-forwarded-client-cert")
	ErrNoURI     = errors.New("x-forwarded-client-cert: the last element has no URI")
)

// MaxElements bounds the elements read (a chain of proxies is short).
const MaxElements = 32

// Parse reads a whole header value.
func Parse(v string) ([]Element, error) {
	var out []Element
	var cur Element
	i := 0
	for {
		// key
		start := i
		for i < len(v) && isKeyByte(v[i]) {
			i++
		}
		if i == start || i >= len(v) || v[i] != '=' {
			return nil, ErrMalformed
		}
		key := v[start:i]
		i++ // '='
		// value
		var val string
		if i < len(v) && v[i] == '"' {
			var b strings.Builder
			i++
			closed := false
			for i < len(v) {
				c := v[i]
				if c == '\\' {
					// An escaped pair: \" and \\ stand for the character; other
					// pairs stay as they are (Envoy puts a certificate's
					// RFC 2253 subject, with its own escapes such as \, in
					// quotes unchanged). Either way it never ends the value.
					if i+1 >= len(v) {
						return nil, ErrMalformed
					}
					if n := v[i+1]; n != '"' && n != '\\' {
						b.WriteByte(c)
					}
					b.WriteByte(v[i+1])
					i += 2
					continue
				}
				if c == '"' {
					closed = true
					i++
					break
				}
				b.WriteByte(c)
				i++
			}
			if !closed {
				return nil, ErrMalformed
			}
			val = b.String()
		} else {
			start := i
			for i < len(v) && v[i] != ',' && v[i] != ';' {
				// '=' is unambiguous after the key (Envoy writes URI
				// SANs unquoted, and a URI may hold one).
				if c := v[i]; c == '"' || c == '\\' || c < ' ' || c == 0x7f {
					return nil, ErrMalformed
				}
				i++
			}
			val = v[start:i]
		}
		cur = append(cur, Pair{Key: key, Value: val})
		if i == len(v) {
			return append(out, cur), nil
		}
		switch v[i] {
		case ';':
			i++
		case ',':
			out = append(out, cur)
			if len(out) >= MaxElements {
				return nil, ErrMalformed
			}
			cur = nil
			i++
			for i < len(v) && v[i] == ' ' { // a list's optional whitespace
				i++
			}
		default: // text after a closing quote
			return nil, ErrMalformed
		}
	}
}

func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// URI is the URI of the last element — the one the proxy in front
// appended for the client it verified. A malformed header, a last element
// without a URI, or with two, is an error.
func URI(v string) (string, error) {
	elems, err := Parse(v)
	if err != nil {
		return "", err
	}
	uri, ok, dup := elems[len(elems)-1].Get("URI")
	if dup {
		return "", ErrMalformed
	}
	if !ok || uri == "" {
		return "", ErrNoURI
	}
	return uri, nil
}

// Package xfcc reads Envoy's x-forwarded-client-cert header. It imports
// nothing, so both the wasm filter and the sidecar use it.
package xfcc

import "strings"

// URI is the URI of the last element of an x-forwarded-client-cert value:
// the client that the proxy which set it verified (Envoy appends its own
// client's element), or "".
func URI(v string) string {
	elems := splitQuoted(v, ',')
	for _, kv := range splitQuoted(elems[len(elems)-1], ';') {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && strings.EqualFold(k, "URI") {
			return strings.Trim(val, `"`)
		}
	}
	return ""
}

// splitQuoted splits on sep outside double quotes.
func splitQuoted(s string, sep byte) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == sep && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

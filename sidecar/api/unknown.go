package api

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// knownNames are the top-level JSON member names of request type t (its
// fields' json names, embedded structs included).
var knownNames sync.Map // reflect.Type → map[string]bool

func known(t reflect.Type) map[string]bool {
	if m, ok := knownNames.Load(t); ok {
		return m.(map[string]bool)
	}
	m := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, _, _ := strings.Cut(tag, ",")
			switch {
			case f.Anonymous && tag == "":
				walk(f.Type)
			case name == "-":
			case name != "":
				m[name] = true
			case f.IsExported():
				m[f.Name] = true
			}
		}
	}
	walk(t)
	knownNames.Store(t, m)
	return m
}

// Unknown holds the top-level members of a request body that its API does
// not define (a newer SDK's field, an engine's extension), in body order
// of their names.
type Unknown struct {
	Names  []string
	Fields map[string]json.RawMessage
}

// SplitUnknown takes out of body the top-level members that the request
// type of v (a ChatRequest or CompletionRequest, through any pointers) does
// not define, for a
// server that ignores them (the native engine, with a warning) or passes
// them on (a remote engine). The rest of the body is returned as it was,
// members in their order; a body that is not a JSON object is returned
// unchanged for the strict decoder to refuse with its own message.
// Names are matched as encoding/json matches them: without case.
func SplitUnknown(body []byte, v any) ([]byte, Unknown) {
	var u Unknown
	if !utf8.Valid(body) {
		return body, u
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(body, &members) != nil {
		return body, u
	}
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	k := known(t)
	for name := range members {
		if k[name] {
			continue
		}
		isKnown := false
		for kn := range k {
			isKnown = isKnown || strings.EqualFold(kn, name)
		}
		if !isKnown {
			u.Names = append(u.Names, name)
		}
	}
	if len(u.Names) == 0 {
		return body, u
	}
	sort.Strings(u.Names)
	u.Fields = map[string]json.RawMessage{}
	for _, n := range u.Names {
		u.Fields[n] = members[n]
	}
	// Rebuild the object without them, keeping the others' order.
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var out bytes.Buffer
	out.WriteByte('{')
	if _, err := d.Token(); err != nil {
		return body, Unknown{}
	}
	first := true
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return body, Unknown{}
		}
		name, _ := t.(string)
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return body, Unknown{}
		}
		if _, drop := u.Fields[name]; drop {
			continue
		}
		if !first {
			out.WriteByte(',')
		}
		first = false
		nb, _ := json.Marshal(name)
		out.Write(nb)
		out.WriteByte(':')
		out.Write(raw)
	}
	out.WriteByte('}')
	return out.Bytes(), u
}

// Package strictyaml decodes YAML configuration files strictly, reporting
// every problem with its field path and line: the first stage of the
// sidecar's and the control plane's config paths.
package strictyaml

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Limits on what a document may make the decoder do. Aliases let a small
// file stand for an enormous one (a 116 KB file of nested aliases is
// billions of nodes): the expanded size is bounded before anything is
// decoded, and so is the error list (an 11 KB invalid file once gave a
// million errors).
const (
	MaxNodes   = 100_000 // nodes aliases may add to the document when expanded
	MaxAliases = 1_000
	MaxErrors  = 50
)

// Decode decodes YAML over v, a pointer to a struct, strictly: every
// unknown field, duplicate key and value of the wrong type is reported
// with its path and line, all at once (the first MaxErrors of them).
// Fields not in the document keep their values (defaults).
func Decode(data []byte, v any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	if err := bound(doc.Content[0]); err != nil {
		return err
	}
	var errs []error
	decodeNode(doc.Content[0], reflect.ValueOf(v).Elem(), "", &errs)
	if len(errs) > MaxErrors {
		errs = append(errs[:MaxErrors], fmt.Errorf("… and %d more errors", len(errs)-MaxErrors))
	}
	return errors.Join(errs...)
}

// bound refuses a document whose aliases add more than MaxNodes nodes
// when expanded, or that has more than MaxAliases aliases. (A document
// without aliases is as large as its file, which the parser has read
// already.) The expanded size is computed once per node (memoised), so
// the check is linear in the file.
func bound(root *yaml.Node) error {
	actual, aliases := 0, 0
	var count func(n *yaml.Node)
	count = func(n *yaml.Node) {
		actual++
		if n.Kind == yaml.AliasNode {
			aliases++
		}
		for _, c := range n.Content {
			count(c)
		}
	}
	count(root)
	if aliases > MaxAliases {
		return fmt.Errorf("parse: the document has %d aliases, more than %d: refused", aliases, MaxAliases)
	}
	if aliases == 0 {
		return nil
	}
	limit := actual + MaxNodes
	size := map[*yaml.Node]int{}
	var walk func(n *yaml.Node, depth int) int
	walk = func(n *yaml.Node, depth int) int {
		if s, ok := size[n]; ok {
			return s
		}
		if depth > 10000 {
			return limit + 1
		}
		size[n] = limit + 1 // a cycle, if it comes back here
		s := 1
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			s += walk(n.Alias, depth+1)
		}
		for _, c := range n.Content {
			if s += walk(c, depth+1); s > limit {
				break
			}
		}
		size[n] = min(s, limit+1)
		return size[n]
	}
	if walk(root, 0) > limit {
		return fmt.Errorf("parse: the document's aliases expand it by more than %d nodes: refused", MaxNodes)
	}
	return nil
}

// duplicate reports a key of mapping n seen before at index below i:
// YAML forbids it, and taking the last silently (weight: 90, then
// weight: 10) hides a mistake.
func duplicate(n *yaml.Node, i int) (line int, dup bool) {
	for j := 0; j < i; j += 2 {
		if n.Content[j].Value == n.Content[i].Value && n.Content[j].Kind == yaml.ScalarNode {
			return n.Content[j].Line, true
		}
	}
	return 0, false
}

var yamlLine = regexp.MustCompile(`^yaml: (unmarshal errors:\n\s*)?line \d+: `)

func decodeNode(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	at := func(format string, args ...any) {
		p := path
		if p == "" {
			p = "(root)"
		}
		*errs = append(*errs, fmt.Errorf("%s (line %d): %s", p, n.Line, fmt.Sprintf(format, args...)))
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch {
	case v.Kind() == reflect.Pointer && hasStruct(v.Type().Elem()):
		if n.Tag == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		decodeNode(n, v.Elem(), path, errs)
		return
	case v.Kind() == reflect.Slice && hasStruct(v.Type().Elem()):
		if n.Tag == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		if n.Kind != yaml.SequenceNode {
			at("must be a list")
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			decodeNode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		v.Set(out)
		return
	case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String && hasStruct(v.Type().Elem()):
		if n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.MappingNode {
			at("must be a mapping")
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if line, dup := duplicate(n, i); dup {
				*errs = append(*errs, fmt.Errorf("%s.%s (line %d): duplicate key (first at line %d)", path, n.Content[i].Value, n.Content[i].Line, line))
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			decodeNode(n.Content[i+1], elem, path+"."+n.Content[i].Value, errs)
			v.SetMapIndex(reflect.ValueOf(n.Content[i].Value).Convert(v.Type().Key()), elem)
		}
		return
	}
	if v.Kind() != reflect.Struct || v.Type() == reflect.TypeOf(time.Time{}) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			at("%s", yamlLine.ReplaceAllString(err.Error(), ""))
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return
		}
		at("must be a mapping")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i].Value, n.Content[i+1]
		sub := key
		if path != "" {
			sub = path + "." + key
		}
		if line, dup := duplicate(n, i); dup {
			*errs = append(*errs, fmt.Errorf("%s (line %d): duplicate key (first at line %d)", sub, n.Content[i].Line, line))
			continue
		}
		f, ok := fieldByTag(v, key)
		if !ok {
			*errs = append(*errs, fmt.Errorf("%s (line %d): unknown field", sub, n.Content[i].Line))
			continue
		}
		decodeNode(val, f, sub, errs)
	}
}

// hasStruct reports whether t is, or leads through pointers and slices to,
// a struct whose fields need strict decoding.
func hasStruct(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && t != reflect.TypeOf(time.Time{})
}

func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" && opts == "inline" && t.Field(i).Type.Kind() == reflect.Struct {
			if f, ok := fieldByTag(v.Field(i), name); ok {
				return f, true
			}
			continue
		}
		if tag == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

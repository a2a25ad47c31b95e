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

// Decode decodes YAML over v, a pointer to a struct, strictly: every
// unknown field and every value of the wrong type is reported with its
// path and line, all at once. Fields not in the document keep their values
// (defaults).
func Decode(data []byte, v any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	var errs []error
	decodeNode(doc.Content[0], reflect.ValueOf(v).Elem(), "", &errs)
	return errors.Join(errs...)
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

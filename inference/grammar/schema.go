// Package grammar is constrained decoding, the last stage of an engine
// step for structured output: a JSON grammar compiled from a JSON Schema
// (or any JSON object, for response_format json_object, or a tool call's
// wrapper), a matcher that steps through the output byte by byte, and the
// token mask that keeps every sampled token inside the grammar — so the
// output parses and validates whatever the model's weights say.
//
// The output is compact JSON (no whitespace between tokens) and the
// grammar knows the fewest bytes that can still complete the document, so
// with a token budget the mask also steers the output to end within it.
package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
)

type kind uint8

const (
	kAny     kind = iota // any JSON value
	kObject              // props, or free keys with addl values
	kArray               // items
	kString              // free text between quotes
	kNumber              // a JSON number
	kInteger             // a JSON number without fraction or exponent
	kLiteral             // one of lits (enum, const, true/false, null)
	kAnyOf               // alternatives told apart by their first byte
	kSeq                 // parts in order: literal bytes or values
	kBranch              // alts (kSeq, each starting with a literal), chosen by that literal
)

// node is one compiled schema.
type node struct {
	kind     kind
	props    []prop
	required uint64 // bit i: props[i] is required
	addl     *node  // object: values of free keys (nil: no free keys)
	items    *node
	minItems int
	maxItems int // -1: no limit
	minLen   int // string, in characters
	maxLen   int // -1: no limit
	lits     [][]byte
	alts     []*node
	parts    []part
	min      int     // fewest bytes of a value
	first    byteSet // bytes a value can begin with
	id       int     // for the matcher's state keys
	path     string  // anyOf: where it is, for errors
}

type prop struct {
	name string
	key  []byte // the name JSON-encoded without its opening quote, then ':'
	n    *node
}

type part struct {
	lit []byte
	n   *node
}

// Limits of what the compiler takes.
const (
	maxProps    = 64 // properties of one object, values of one enum
	maxDepth    = 32 // nesting of the matcher's values
	maxNumBytes = 24 // bytes of one number
)

// Grammar is a compiled grammar. It is immutable and may be shared.
type Grammar struct {
	root *node
	once sync.Once
	id   uint64
}

// Any values, shared by every grammar.
var (
	anyNode    = &node{kind: kAny, min: 1, id: -1}
	anyObject  = &node{kind: kObject, addl: anyNode, maxItems: -1, min: 2, id: -2}
	anyArray   = &node{kind: kArray, items: anyNode, maxItems: -1, min: 2, id: -3}
	anyString  = &node{kind: kString, maxLen: -1, min: 2, id: -4}
	anyNumber  = &node{kind: kNumber, min: 1, id: -5}
	boolNode   = &node{kind: kLiteral, lits: [][]byte{[]byte("true"), []byte("false")}, min: 4, id: -6}
	nullNode   = &node{kind: kLiteral, lits: [][]byte{[]byte("null")}, min: 4, id: -7}
	anyInteger = &node{kind: kInteger, min: 1, id: -8}
)

// JSONObject is the grammar of response_format json_object: any JSON
// object.
func JSONObject() *Grammar { return jsonObject }

var jsonObject = &Grammar{root: anyObject}

// Error is a schema the compiler refuses; Path is the JSON pointer of the
// construct (e.g. "/properties/when/format").
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Compile compiles a JSON Schema (the subset OpenAI's strict structured
// output takes: type, properties, required, additionalProperties, items,
// minItems, maxItems, enum, const, anyOf, $ref to $defs/definitions,
// minLength, maxLength, nullable types). A keyword it cannot enforce
// (pattern, format, minimum, …) is an *Error naming it, never ignored.
//
// A schema compiled before (byte for byte) gives the same grammar, so the
// masks a vocabulary cached for it serve the next request too.
func Compile(schema []byte) (*Grammar, error) {
	if g, ok := compiled.Get(string(schema)); ok {
		return g, nil
	}
	g, err := compile(schema)
	if err == nil {
		compiled.Add(string(schema), g)
	}
	return g, err
}

// compiled holds the grammars of recent schemas and choices.
var compiled, _ = lru.New[string, *Grammar](256)

func compile(schema []byte) (*Grammar, error) {
	var doc any
	d := json.NewDecoder(bytes.NewReader(schema))
	d.UseNumber()
	if err := d.Decode(&doc); err != nil {
		return nil, &Error{Msg: "the schema is not valid JSON: " + err.Error()}
	}
	c := compiler{doc: doc, refs: map[string]*node{}}
	root, err := c.compile(doc, "")
	if err != nil {
		return nil, err
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	return &Grammar{root: root}, nil
}

type compiler struct {
	doc   any
	refs  map[string]*node
	all   []*node
	next  int
	depth int
}

func (c *compiler) newNode(k kind) *node {
	n := &node{kind: k, maxItems: -1, maxLen: -1, id: c.next}
	c.next++
	c.all = append(c.all, n)
	return n
}

// Keywords that only annotate a schema.
var annotations = map[string]bool{"title": true, "description": true, "$schema": true, "$id": true, "examples": true,
	"default": true, "$comment": true, "strict": true, "deprecated": true, "readOnly": true, "writeOnly": true,
	"$defs": true, "definitions": true}

func (c *compiler) compile(v any, path string) (*node, error) {
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > 256 {
		return nil, &Error{path, "the schema nests too deeply"}
	}
	switch s := v.(type) {
	case bool:
		if s {
			return anyNode, nil
		}
		return nil, &Error{path, "a false schema admits no value"}
	case map[string]any:
		return c.object(s, path)
	}
	return nil, &Error{path, "a schema must be an object or a boolean"}
}

func (c *compiler) object(s map[string]any, path string) (*node, error) {
	for k := range s {
		switch k {
		case "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum", "const",
			"anyOf", "$ref", "minLength", "maxLength", "nullable":
		default:
			if !annotations[k] {
				return nil, &Error{path + "/" + k, fmt.Sprintf("the keyword %q is not supported", k)}
			}
		}
	}
	if ref, ok := s["$ref"]; ok {
		if len(s) > 1 && !onlyAnnotations(s, "$ref") {
			return nil, &Error{path, "$ref beside other keywords is not supported"}
		}
		r, _ := ref.(string)
		return c.ref(r, path+"/$ref")
	}
	if e, ok := s["enum"]; ok {
		vals, ok := e.([]any)
		if !ok || len(vals) == 0 {
			return nil, &Error{path + "/enum", "must be a non-empty array"}
		}
		return c.literal(vals, path+"/enum")
	}
	if e, ok := s["const"]; ok {
		return c.literal([]any{e}, path+"/const")
	}
	if a, ok := s["anyOf"]; ok {
		alts, ok := a.([]any)
		if !ok || len(alts) == 0 {
			return nil, &Error{path + "/anyOf", "must be a non-empty array"}
		}
		if _, typed := s["type"]; typed {
			return nil, &Error{path, "anyOf beside type is not supported"}
		}
		n := c.newNode(kAnyOf)
		n.path = path + "/anyOf"
		for i, alt := range alts {
			an, err := c.compile(alt, fmt.Sprintf("%s/anyOf/%d", path, i))
			if err != nil {
				return nil, err
			}
			n.alts = append(n.alts, an)
		}
		return n, nil
	}
	var types []string
	switch t := s["type"].(type) {
	case nil:
		// Keywords of one type without "type" are written as that type
		// (a subset of what the schema admits).
		implied := map[string]bool{}
		for k, t := range map[string]string{"properties": "object", "required": "object", "additionalProperties": "object",
			"items": "array", "minItems": "array", "maxItems": "array", "minLength": "string", "maxLength": "string"} {
			if _, ok := s[k]; ok {
				implied[t] = true
			}
		}
		if len(implied) > 1 {
			return nil, &Error{path, "keywords of several types without \"type\" are not supported"}
		}
		for t := range implied {
			types = []string{t}
		}
		if len(types) == 0 {
			return anyNode, nil
		}
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			ts, ok := x.(string)
			if !ok {
				return nil, &Error{path + "/type", "must be a string or an array of strings"}
			}
			types = append(types, ts)
		}
	default:
		return nil, &Error{path + "/type", "must be a string or an array of strings"}
	}
	if nb, _ := s["nullable"].(bool); nb {
		types = append(types, "null")
	}
	if len(types) == 0 {
		return nil, &Error{path + "/type", "must name at least one type"}
	}
	var alts []*node
	for _, t := range types {
		n, err := c.typed(t, s, path)
		if err != nil {
			return nil, err
		}
		alts = append(alts, n)
	}
	if len(alts) == 1 {
		return alts[0], nil
	}
	n := c.newNode(kAnyOf)
	n.alts = alts
	return n, nil
}

func onlyAnnotations(s map[string]any, except string) bool {
	for k := range s {
		if k != except && !annotations[k] {
			return false
		}
	}
	return true
}

func (c *compiler) typed(t string, s map[string]any, path string) (*node, error) {
	switch t {
	case "object":
		return c.objectType(s, path)
	case "array":
		n := c.newNode(kArray)
		n.items = anyNode
		if it, ok := s["items"]; ok {
			in, err := c.compile(it, path+"/items")
			if err != nil {
				return nil, err
			}
			n.items = in
		}
		var err error
		if n.minItems, err = count(s, "minItems", 0, path); err != nil {
			return nil, err
		}
		if n.maxItems, err = count(s, "maxItems", -1, path); err != nil {
			return nil, err
		}
		if n.maxItems >= 0 && n.maxItems < n.minItems {
			return nil, &Error{path + "/maxItems", "is below minItems"}
		}
		return n, nil
	case "string":
		n := c.newNode(kString)
		var err error
		if n.minLen, err = count(s, "minLength", 0, path); err != nil {
			return nil, err
		}
		if n.maxLen, err = count(s, "maxLength", -1, path); err != nil {
			return nil, err
		}
		if n.maxLen >= 0 && n.maxLen < n.minLen {
			return nil, &Error{path + "/maxLength", "is below minLength"}
		}
		return n, nil
	case "number":
		return anyNumber, nil
	case "integer":
		return anyInteger, nil
	case "boolean":
		return boolNode, nil
	case "null":
		return nullNode, nil
	}
	return nil, &Error{path + "/type", fmt.Sprintf("unknown type %q", t)}
}

func count(s map[string]any, key string, def int, path string) (int, error) {
	v, ok := s[key]
	if !ok {
		return def, nil
	}
	num, ok := v.(json.Number)
	if !ok {
		return 0, &Error{path + "/" + key, "must be a non-negative integer"}
	}
	i, err := num.Int64()
	if err != nil || i < 0 || i > 1<<20 {
		return 0, &Error{path + "/" + key, "must be a non-negative integer (at most 1048576)"}
	}
	return int(i), nil
}

func (c *compiler) objectType(s map[string]any, path string) (*node, error) {
	n := c.newNode(kObject)
	props, _ := s["properties"].(map[string]any)
	if _, ok := s["properties"]; ok && props == nil {
		return nil, &Error{path + "/properties", "must be an object"}
	}
	if len(props) > maxProps {
		return nil, &Error{path + "/properties", fmt.Sprintf("more than %d properties are not supported", maxProps)}
	}
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	// Declaration order is lost by the JSON decoder; the grammar takes the
	// properties in any order, so sorting only makes ids deterministic.
	sort.Strings(names)
	for _, k := range names {
		pn, err := c.compile(props[k], path+"/properties/"+escapePointer(k))
		if err != nil {
			return nil, err
		}
		key, _ := json.Marshal(k)
		n.props = append(n.props, prop{name: k, key: append(key[1:], ':'), n: pn})
	}
	if r, ok := s["required"]; ok {
		list, ok := r.([]any)
		if !ok {
			return nil, &Error{path + "/required", "must be an array of property names"}
		}
		for i, x := range list {
			name, _ := x.(string)
			j := sort.SearchStrings(names, name)
			if j == len(names) || names[j] != name {
				return nil, &Error{fmt.Sprintf("%s/required/%d", path, i), fmt.Sprintf("%q is not among the properties", name)}
			}
			n.required |= 1 << j
		}
	}
	switch a := s["additionalProperties"].(type) {
	case nil, bool:
		// Only the declared properties are written (a value without the
		// extra members still validates); free keys when none is declared.
		if len(props) == 0 && (a == nil || a == true) {
			n.addl = anyNode
		}
	case map[string]any:
		if len(props) == 0 {
			an, err := c.compile(a, path+"/additionalProperties")
			if err != nil {
				return nil, err
			}
			n.addl = an
		}
	default:
		return nil, &Error{path + "/additionalProperties", "must be a boolean or a schema"}
	}
	return n, nil
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func (c *compiler) literal(vals []any, path string) (*node, error) {
	if len(vals) > maxProps {
		return nil, &Error{path, fmt.Sprintf("more than %d values are not supported", maxProps)}
	}
	n := c.newNode(kLiteral)
	for _, v := range vals {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, &Error{path, err.Error()}
		}
		for _, l := range n.lits {
			if bytes.Equal(l, b) {
				return nil, &Error{path, "values must be distinct"}
			}
		}
		n.lits = append(n.lits, b)
	}
	return n, nil
}

func (c *compiler) ref(r, path string) (*node, error) {
	if n, ok := c.refs[r]; ok {
		return n, nil
	}
	if !strings.HasPrefix(r, "#") {
		return nil, &Error{path, fmt.Sprintf("only local references (#...) are supported, got %q", r)}
	}
	target := c.doc
	if ptr := strings.TrimPrefix(r, "#"); ptr != "" {
		if !strings.HasPrefix(ptr, "/") {
			return nil, &Error{path, fmt.Sprintf("malformed reference %q", r)}
		}
		for _, tok := range strings.Split(ptr[1:], "/") {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			m, ok := target.(map[string]any)
			if !ok {
				return nil, &Error{path, fmt.Sprintf("reference %q does not resolve", r)}
			}
			if target, ok = m[tok]; !ok {
				return nil, &Error{path, fmt.Sprintf("reference %q does not resolve", r)}
			}
		}
	}
	// A placeholder first, so a recursive reference finds it.
	ph := c.newNode(kSeq)
	c.refs[r] = ph
	n, err := c.compile(target, strings.TrimPrefix(r, "#"))
	if err != nil {
		return nil, err
	}
	ph.parts = []part{{n: n}}
	return ph, nil
}

// finish computes every node's fewest bytes (a fixed point, for recursive
// references) and checks what the matcher relies on.
func (c *compiler) finish() error {
	const inf = math.MaxInt32
	for _, n := range c.all {
		n.min = inf
	}
	for changed := true; changed; {
		changed = false
		for _, n := range c.all {
			if m := minOf(n); m < n.min {
				n.min, changed = m, true
			}
		}
	}
	for _, n := range c.all {
		if n.min >= inf {
			return &Error{Msg: "the schema admits no finite value (a required recursion)"}
		}
	}
	for changed := true; changed; {
		changed = false
		for _, n := range c.all {
			if f := firstOf(n); f != n.first {
				n.first, changed = f, true
			}
		}
	}
	for _, n := range c.all {
		if n.kind == kAnyOf {
			if err := disjoint(n); err != nil {
				return err
			}
		}
	}
	return nil
}

func sat(a, b int) int { return min(a+b, math.MaxInt32) }

// minOf is the fewest bytes of a value of n, given its children's.
func minOf(n *node) int {
	switch n.kind {
	case kObject:
		return sat(restAfter(n, 0), 2)
	case kArray:
		if n.minItems == 0 {
			return 2
		}
		return sat(2+n.minItems-1, mul(n.minItems, n.items.min))
	case kString:
		return 2 + n.minLen
	case kLiteral:
		m := math.MaxInt32
		for _, l := range n.lits {
			m = min(m, len(l))
		}
		return m
	case kAnyOf:
		m := math.MaxInt32
		for _, a := range n.alts {
			m = min(m, a.min)
		}
		return m
	case kSeq:
		t := 0
		for _, p := range n.parts {
			if p.n != nil {
				t = sat(t, p.n.min)
			} else {
				t = sat(t, len(p.lit))
			}
		}
		return t
	case kBranch:
		m := math.MaxInt32
		for _, a := range n.alts {
			m = min(m, a.min)
		}
		return m
	}
	return n.min
}

func mul(a, b int) int {
	if b != 0 && a > math.MaxInt32/b {
		return math.MaxInt32
	}
	return a * b
}

// restAfter is the fewest bytes that close an object once the properties
// in seen are written (after a value, or after '{' when seen is 0), the
// '}' not counted.
func restAfter(n *node, seen uint64) int {
	t := 0
	first := seen == 0
	for i, p := range n.props {
		if n.required&(1<<i) != 0 && seen&(1<<i) == 0 {
			if !first {
				t = sat(t, 1) // the comma
			}
			first = false
			t = sat(t, sat(1+len(p.key), p.n.min))
		}
	}
	return t
}

// disjoint checks that an anyOf's alternatives start with different bytes,
// so the first byte of a value chooses one.
func disjoint(n *node) error {
	var seen byteSet
	for i, a := range n.alts {
		if a.first.overlaps(&seen) {
			return &Error{fmt.Sprintf("%s/%d", n.path, i), "this alternative can start like an earlier one; only alternatives of different types or distinct literals are supported"}
		}
		seen.union(&a.first)
	}
	return nil
}

// byteSet is a set of bytes.
type byteSet [4]uint64

func (s *byteSet) add(b byte)      { s[b>>6] |= 1 << (b & 63) }
func (s *byteSet) has(b byte) bool { return s[b>>6]&(1<<(b&63)) != 0 }
func (s *byteSet) union(o *byteSet) {
	s[0], s[1], s[2], s[3] = s[0]|o[0], s[1]|o[1], s[2]|o[2], s[3]|o[3]
}
func (s *byteSet) overlaps(o *byteSet) bool {
	return s[0]&o[0] != 0 || s[1]&o[1] != 0 || s[2]&o[2] != 0 || s[3]&o[3] != 0
}

// starts says whether a value of n can begin with b.
func starts(n *node, b byte) bool { return n.first.has(b) }

// firstOf is the bytes a value of n can begin with, given its children's
// (computed to a fixed point, for references).
func firstOf(n *node) byteSet {
	var s byteSet
	switch n.kind {
	case kAny:
		for _, b := range []byte("{[\"-0123456789tfn") {
			s.add(b)
		}
	case kObject:
		s.add('{')
	case kArray:
		s.add('[')
	case kString:
		s.add('"')
	case kNumber, kInteger:
		for _, b := range []byte("-0123456789") {
			s.add(b)
		}
	case kLiteral:
		for _, l := range n.lits {
			if len(l) > 0 {
				s.add(l[0])
			}
		}
	case kAnyOf, kBranch:
		for _, a := range n.alts {
			s.union(&a.first)
		}
	case kSeq:
		if len(n.parts) > 0 {
			if p := n.parts[0]; p.n != nil {
				s = p.n.first
			} else if len(p.lit) > 0 {
				s.add(p.lit[0])
			}
		}
	}
	return s
}

func init() {
	for _, n := range []*node{anyNode, anyObject, anyArray, anyString, anyNumber, boolNode, nullNode, anyInteger} {
		n.first = firstOf(n)
	}
}

// Alt is one alternative of a Choice: Prefix, a value of Schema, Suffix.
type Alt struct {
	Prefix []byte
	Schema []byte
	Suffix []byte
}

// Choice is the grammar of one of alts, told apart by their prefixes
// (which must differ before either ends): a tool call is
// `{"name":"get_weather","arguments":` + the tool's parameters + `}`.
func Choice(alts []Alt) (*Grammar, error) {
	var key strings.Builder
	key.WriteString("choice\x00")
	for _, a := range alts {
		for _, p := range [][]byte{a.Prefix, a.Schema, a.Suffix} {
			key.Write(p)
			key.WriteByte(0)
		}
	}
	if g, ok := compiled.Get(key.String()); ok {
		return g, nil
	}
	g, err := choice(alts)
	if err == nil {
		compiled.Add(key.String(), g)
	}
	return g, err
}

func choice(alts []Alt) (*Grammar, error) {
	c := compiler{}
	root := c.newNode(kBranch)
	for i, a := range alts {
		var doc any
		d := json.NewDecoder(bytes.NewReader(a.Schema))
		d.UseNumber()
		if err := d.Decode(&doc); err != nil {
			return nil, &Error{Msg: fmt.Sprintf("alternative %d: the schema is not valid JSON: %v", i, err)}
		}
		// Each schema resolves its own references; node ids stay unique.
		c.doc, c.refs = doc, map[string]*node{}
		n, err := c.compile(doc, "")
		if err != nil {
			return nil, err
		}
		if len(a.Prefix) == 0 {
			return nil, &Error{Msg: fmt.Sprintf("alternative %d has no prefix", i)}
		}
		for j, b := range alts[:i] {
			if bytes.HasPrefix(a.Prefix, b.Prefix) || bytes.HasPrefix(b.Prefix, a.Prefix) {
				return nil, &Error{Msg: fmt.Sprintf("alternatives %d and %d: one prefix starts the other", j, i)}
			}
		}
		seq := c.newNode(kSeq)
		seq.parts = []part{{lit: a.Prefix}, {n: n}}
		if len(a.Suffix) > 0 {
			seq.parts = append(seq.parts, part{lit: a.Suffix})
		}
		root.alts = append(root.alts, seq)
	}
	if len(root.alts) == 0 || len(root.alts) > maxProps {
		return nil, &Error{Msg: fmt.Sprintf("a choice needs 1 to %d alternatives", maxProps)}
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	return &Grammar{root: root}, nil
}

// Package openai reads what the filter needs from OpenAI-compatible
// requests and responses: the model and sampling fields, a prompt-size
// estimate, a canonical cache key, and the usage a response reports.
package openai

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/crypto/blake2b"
)

// Request is what the filter reads from a request body.
type Request struct {
	Model  string
	Stream bool
	// MaxTokens is max_tokens or max_completion_tokens (0: absent).
	MaxTokens int
	// Temperature, when HasTemperature (absent, OpenAI's default is 1).
	Temperature    float64
	HasTemperature bool
	// PromptTokens estimates the prompt: a token per 4 characters of text,
	// plus 4 per chat message.
	PromptTokens int
	// body and root are the request, for Key.
	body []byte
	root span
	key  string
}

// Key identifies the request's output: a hash of its canonical form —
// objects' members sorted by key (the last of duplicates), strings
// decoded, numbers as written, white space dropped — without the
// top-level fields that do not change the output (user, metadata, store).
// It is 32 hex digits, computed on demand (only the cache needs it). The
// hash is BLAKE2b: a cache shared by tenants must not let one forge
// another's key, and in wasm it costs a third of SHA-256.
func (r *Request) Key() string {
	if r.key == "" && r.body != nil {
		// One allocation: the canonical form is at most twice the body
		// (a kind byte and a length before each string and key), and as
		// much scratch space.
		n := 2*len(r.body) + 16
		buf := make([]byte, 2*n)
		c := canonical{sc: scanner{b: r.body[:r.root.to], i: r.root.from}, out: buf[:0:n], scratch: buf[n:n]}
		c.members = c.first[:0]
		c.value(true)
		sum := blake2b.Sum256(c.out)
		r.key = hex.EncodeToString(sum[:16])
	}
	return r.key
}

// Body is the request as read.
func (r *Request) Body() []byte { return r.body }

// Deterministic reports temperature 0, the only sampling a cache may
// answer for without being asked.
func (r Request) Deterministic() bool { return r.HasTemperature && r.Temperature == 0 }

// ErrNotJSON and the other errors say why a body is not a request.
var (
	ErrNotJSON  = errors.New("the request body is not a JSON object")
	ErrNoModel  = errors.New(`"model" is required and must be a non-empty string`)
	ErrBadField = errors.New("invalid field")
	// ErrDuplicate: two members of the request object have names that
	// are equal without case. encoding/json (the sidecar) would take the
	// last for one field where an exact reader takes another: the filter
	// could cache as deterministic what the model samples at 0.9. The
	// sidecar refuses such bodies too.
	ErrDuplicate = errors.New("duplicate member names (compared without case) in the request object")
)

// Parse reads a chat or completions request, in one pass over the body.
// Of a field given twice the last counts, as in encoding/json.
func Parse(body []byte) (Request, error) {
	var r Request
	var model, stream, maxTokens, maxCompletion, temperature span
	prompt := 0 // the estimates of the last "messages" and "prompt"
	var messages int
	sc := scanner{b: body}
	sc.ws()
	if sc.i >= len(body) || body[sc.i] != '{' {
		return r, ErrNotJSON
	}
	from := sc.i
	sc.i++
	sc.depth = 1
	type name struct {
		b     []byte
		lower bool // lower-case ASCII: equal without case only if equal
	}
	var first [16]name // for the duplicate check: a request has a few
	keys := first[:0]
	dup := false
	for first := true; ; first = false {
		key, complex, done, ok := sc.nextKey(first)
		if !ok {
			return r, ErrNotJSON
		}
		if done {
			break
		}
		if complex {
			key = unquote(nil, key)
		}
		lower := lowerASCII(key)
		for _, k := range keys {
			// Refused once the body is known to be JSON.
			if k.lower && lower {
				dup = dup || string(k.b) == string(key)
			} else {
				dup = dup || bytes.EqualFold(k.b, key)
			}
		}
		if len(keys) >= maxMembers {
			return r, ErrNotJSON
		}
		keys = append(keys, name{key, lower})
		f := field(key)
		var v span
		switch f {
		case fMessages:
			v, messages, ok = sc.estimate(false)
		case fPrompt:
			v, prompt, ok = sc.estimate(false)
		default:
			v, ok = sc.value()
		}
		if !ok {
			return r, ErrNotJSON
		}
		switch f {
		case fModel:
			model = v
		case fStream:
			stream = v
		case fMaxTokens:
			maxTokens = v
		case fMaxCompletion:
			maxCompletion = v
		case fTemperature:
			temperature = v
		}
	}
	root := span{k: kObject, from: from, to: sc.i}
	if sc.ws(); sc.i != len(body) {
		return r, ErrNotJSON
	}
	if dup {
		return r, ErrDuplicate
	}
	if model.k != kString {
		return r, ErrNoModel
	}
	// The model is a view of the body, which the request keeps anyway.
	if r.Model = textView(body, model); r.Model == "" {
		return r, ErrNoModel
	}
	switch stream.k {
	case kInvalid:
	case kTrue, kFalse:
		r.Stream = stream.k == kTrue
	default:
		return r, fmt.Errorf(`%w: "stream" must be true or false`, ErrBadField)
	}
	for _, f := range [2]struct {
		name string
		v    span
	}{{"max_tokens", maxTokens}, {"max_completion_tokens", maxCompletion}} {
		if f.v.k == kInvalid || f.v.k == kNull {
			continue
		}
		n, err := strconv.ParseInt(view(body[f.v.from:f.v.to]), 10, 64)
		if f.v.k != kNumber || err != nil || n < 0 || n > 1<<31 {
			return r, fmt.Errorf(`%w: %q must be a non-negative integer`, ErrBadField, f.name)
		}
		r.MaxTokens = int(n)
	}
	if temperature.k != kInvalid && temperature.k != kNull {
		f, err := strconv.ParseFloat(view(body[temperature.from:temperature.to]), 64)
		if temperature.k != kNumber || err != nil {
			return r, fmt.Errorf(`%w: "temperature" must be a number`, ErrBadField)
		}
		r.Temperature, r.HasTemperature = f, true
	}
	r.PromptTokens = messages + prompt
	r.body, r.root = body, root
	return r, nil
}

// maxMembers bounds the request object's members.
const maxMembers = 1024

// canonical writes a value's canonical form: a kind byte, then for
// strings and numbers their length and bytes, for arrays their elements,
// for objects their members sorted by key (keys length-prefixed) — an
// unambiguous encoding. It reads a document already validated.
type canonical struct {
	sc      scanner
	out     []byte
	members []member // a stack: each object's members above its parent's
	scratch []byte
	first   [32]member
}

type member struct {
	key      []byte
	from, to int // the member's canonical value in out
}

func (c *canonical) bytes(k byte, p []byte) {
	c.out = binary.AppendUvarint(append(c.out, k), uint64(len(p)))
	c.out = append(c.out, p...)
}

func (c *canonical) value(top bool) {
	sc := &c.sc
	sc.ws()
	switch sc.b[sc.i] {
	case '"':
		raw, complex, _ := sc.str()
		if complex {
			c.scratch = unquote(c.scratch[:0], raw)
			raw = c.scratch
		}
		c.bytes('s', raw)
	case 't':
		c.out = append(c.out, 't')
		sc.i += len("true")
	case 'f':
		c.out = append(c.out, 'f')
		sc.i += len("false")
	case 'n':
		c.out = append(c.out, 'z')
		sc.i += len("null")
	case '[':
		c.out = append(c.out, 'a')
		sc.i++
		for {
			sc.ws()
			if sc.b[sc.i] == ']' {
				sc.i++
				break
			}
			if sc.b[sc.i] == ',' {
				sc.i++
				continue
			}
			c.value(false)
		}
		c.out = append(c.out, ']')
	case '{':
		base, start := len(c.members), len(c.out)
		sc.i++
		for first := true; ; first = false {
			raw, complex, done, _ := sc.nextKey(first)
			if done {
				break
			}
			if complex {
				raw = unquote(nil, raw)
			}
			from := len(c.out)
			c.value(false)
			if top {
				switch string(raw) {
				case "user", "metadata", "store":
					c.out = c.out[:from]
					continue
				}
			}
			c.members = append(c.members, member{raw, from, len(c.out)})
		}
		ms := c.members[base:]
		// Sorted by key; of duplicates the last (a stable sort keeps their
		// order). Objects are small: insertion sort, without the calls
		// through a comparison function.
		for i := 1; i < len(ms); i++ {
			for j := i; j > 0 && string(ms[j].key) < string(ms[j-1].key); j-- {
				ms[j], ms[j-1] = ms[j-1], ms[j]
			}
		}
		c.scratch = append(c.scratch[:0], c.out[start:]...) // the values, as written above
		c.out = append(c.out[:start], 'o')
		for i, m := range ms {
			if i+1 < len(ms) && bytes.Equal(ms[i+1].key, m.key) {
				continue
			}
			c.bytes('k', m.key)
			c.out = append(c.out, c.scratch[m.from-start:m.to-start]...)
		}
		c.out = append(c.out, '}')
		c.members = c.members[:base]
	default: // a number
		from := sc.i
		sc.number()
		c.bytes('n', sc.b[from:sc.i])
	}
}

// Usage is a response's token usage.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// UsageOf reads the usage of a JSON response body as encoding/json would
// decode it into a struct with a *Usage "usage" field: keys matched
// without case, a null usage unsets it, a later usage object updates the
// earlier one, a value of the wrong type fails the whole body.
func UsageOf(body []byte) (Usage, bool) {
	sc := scanner{b: body}
	sc.ws()
	if sc.i >= len(body) || body[sc.i] != '{' {
		return Usage{}, false
	}
	var u Usage
	have, bad := false, false
	sc.i++
	sc.depth = 1
	for first := true; ; first = false {
		key, complex, done, ok := sc.nextKey(first)
		if !ok {
			return Usage{}, false
		}
		if done {
			break
		}
		if !foldIs(key, complex, "usage") {
			if _, ok := sc.value(); !ok {
				return Usage{}, false
			}
			continue
		}
		sc.ws()
		if sc.i < len(body) && body[sc.i] == '{' {
			have = true
			sc.i++
			if sc.depth++; sc.depth > maxDepth {
				return Usage{}, false
			}
			for first := true; ; first = false {
				key, complex, done, ok := sc.nextKey(first)
				if !ok {
					return Usage{}, false
				}
				if done {
					break
				}
				var dst *int
				switch {
				case foldIs(key, complex, "prompt_tokens"):
					dst = &u.PromptTokens
				case foldIs(key, complex, "completion_tokens"):
					dst = &u.CompletionTokens
				case foldIs(key, complex, "total_tokens"):
					dst = &u.TotalTokens
				}
				f, ok := sc.value()
				if !ok {
					return Usage{}, false
				}
				if dst == nil || f.k == kNull {
					continue
				}
				n, err := strconv.ParseInt(view(body[f.from:f.to]), 10, 64)
				if f.k != kNumber || err != nil {
					bad = true
					continue
				}
				*dst = int(n)
			}
			sc.depth--
			continue
		}
		v, ok := sc.value()
		if !ok {
			return Usage{}, false
		}
		if v.k == kNull {
			u, have = Usage{}, false
		} else {
			bad = true
		}
	}
	if sc.ws(); sc.i != len(body) || bad || !have {
		return Usage{}, false
	}
	return u.total(), true
}

// foldIs matches an object key to a struct field's name as encoding/json
// does: without case.
func foldIs(key []byte, complex bool, name string) bool {
	if complex {
		key = unquote(nil, key)
	} else if len(key) != len(name) {
		return false // ASCII folds to ASCII of the same length
	}
	return string(key) == name || bytes.EqualFold(key, []byte(name))
}

// StreamUsage reads the usage of a server-sent-events response: the last
// data chunk that carries one (stream_options.include_usage).
func StreamUsage(sse []byte) (Usage, bool) {
	for len(sse) > 0 {
		i := bytes.LastIndexByte(sse[:len(sse)-1], '\n')
		line := bytes.TrimSpace(sse[i+1:])
		sse = sse[:max(i, 0)]
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok && bytes.Contains(data, []byte(`"usage"`)) {
			if u, ok := UsageOf(bytes.TrimSpace(data)); ok {
				return u, true
			}
		}
		if i < 0 {
			break
		}
	}
	return Usage{}, false
}

func (u *Usage) total() Usage {
	if u.TotalTokens == 0 {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return *u
}

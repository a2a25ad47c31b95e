package grammar

import (
	"math"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Vocab is a model's vocabulary as the mask sees it: the bytes of every
// token in a trie, so the tokens sharing a prefix are matched once, and
// the tokens that end a reply.
type Vocab struct {
	size  int
	nodes []trieNode
	ends  []int
	isEnd []bool
	// cache maps a grammar and a matcher state to the tokens that may
	// follow it and the bytes each leaves to write: a state repeats
	// (inside a long string, between the members of an object), the walk
	// of the trie need not.
	cache *lru.Cache[string, []entry]
}

type trieNode struct {
	kids []edge
	toks []int32
}

type edge struct {
	b  byte
	to int32
}

type entry struct {
	tok  int32
	need int32 // fewest bytes left after the token
}

// NewVocab builds the vocabulary of size tokens; piece gives a token's
// bytes, end says whether the engine ends a reply on it, and never marks
// tokens the grammar must not produce (control tokens that are not ends).
func NewVocab(size int, piece func(int) []byte, end, never func(int) bool) *Vocab {
	v := &Vocab{size: size, nodes: make([]trieNode, 1, size), isEnd: make([]bool, size)}
	v.cache, _ = lru.New[string, []entry](1024)
	for t := range size {
		if end(t) {
			v.ends = append(v.ends, t)
			v.isEnd[t] = true
			continue
		}
		p := piece(t)
		if len(p) == 0 || never(t) {
			continue
		}
		at := int32(0)
	next:
		for _, b := range p {
			for _, e := range v.nodes[at].kids {
				if e.b == b {
					at = e.to
					continue next
				}
			}
			v.nodes = append(v.nodes, trieNode{})
			n := int32(len(v.nodes) - 1)
			v.nodes[at].kids = append(v.nodes[at].kids, edge{b, n})
			at = n
		}
		v.nodes[at].toks = append(v.nodes[at].toks, int32(t))
	}
	return v
}

// Size is the number of tokens.
func (v *Vocab) Size() int { return v.size }

var grammarIDs atomic.Uint64

// id tells grammars apart in the vocabulary's cache.
func (g *Grammar) cacheID() uint64 {
	g.once.Do(func() { g.id = grammarIDs.Add(1) })
	return g.id
}

// Constraint keeps one sequence's tokens inside a grammar within a token
// budget. It is used by one goroutine (the engine's).
type Constraint struct {
	v       *Vocab
	g       *Grammar
	m       *Matcher
	budget  int
	scratch []*Matcher
	keep    []bool
	key     []byte
	failed  bool
}

// Constrain starts a constraint of the output to g over at most maxTokens
// tokens (the end token not counted, as max_tokens does not count it). It
// fails when no document fits the budget.
func (v *Vocab) Constrain(g *Grammar, maxTokens int) (*Constraint, error) {
	m := g.Matcher()
	if need := m.MinRemaining(); need > maxTokens {
		return nil, &Error{Msg: "the shortest output the schema admits does not fit in max_tokens"}
	}
	return &Constraint{v: v, g: g, m: m, budget: maxTokens, keep: make([]bool, v.size)}, nil
}

// Done says whether the output so far is a complete document.
func (c *Constraint) Done() bool { return c.m.Done() }

// Complete says whether the output is a complete document that can take
// no more bytes.
func (c *Constraint) Complete() bool { return !c.failed && c.m.Closed() }

// Failed says whether a token outside the grammar was accepted (the mask
// left nothing but an end, or the caller did not mask).
func (c *Constraint) Failed() bool { return c.failed }

// Mask sets to -Inf the logits of every token that may not come next: a
// token must keep the output a prefix of a document that can still be
// completed with the tokens left, and an end token is allowed only once
// the document is complete.
func (c *Constraint) Mask(logits []float32) {
	keep := c.keep
	clear(keep)
	any := false
	if !c.failed && !c.m.Closed() {
		for _, e := range c.allowed() {
			if int(e.need) <= c.budget-1 {
				keep[e.tok] = true
				any = true
			}
		}
	}
	if c.m.Done() || !any || c.failed {
		for _, t := range c.v.ends {
			keep[t] = true
		}
	}
	inf := float32(math.Inf(-1))
	for i := range logits {
		if i >= len(keep) || !keep[i] {
			logits[i] = inf
		}
	}
}

// Accept advances past the sampled token.
func (c *Constraint) Accept(tok int, piece []byte) {
	c.budget--
	if tok >= 0 && tok < len(c.v.isEnd) && c.v.isEnd[tok] {
		return
	}
	if c.failed || !c.m.Write(piece) {
		c.failed = true
	}
}

// allowed is the tokens that may follow the matcher's state, each with
// the bytes it leaves to write, ignoring the budget.
func (c *Constraint) allowed() []entry {
	c.key = binaryID(c.key[:0], c.g.cacheID())
	c.key = c.m.key(c.key)
	if es, ok := c.v.cache.Get(string(c.key)); ok {
		return es
	}
	var out []entry
	c.walk(0, c.m, 0, &out)
	c.v.cache.Add(string(c.key), out)
	return out
}

func binaryID(dst []byte, id uint64) []byte {
	for range 8 {
		dst = append(dst, byte(id))
		id >>= 8
	}
	return dst
}

func (c *Constraint) walk(at int32, m *Matcher, depth int, out *[]entry) {
	if depth >= len(c.scratch) {
		c.scratch = append(c.scratch, &Matcher{})
	}
	for _, e := range c.v.nodes[at].kids {
		next := c.scratch[depth]
		next.copyFrom(m)
		if !next.Feed(e.b) {
			continue
		}
		if toks := c.v.nodes[e.to].toks; len(toks) > 0 {
			need := int32(next.MinRemaining())
			for _, t := range toks {
				*out = append(*out, entry{t, need})
			}
		}
		if len(c.v.nodes[e.to].kids) > 0 {
			c.walk(e.to, next, depth+1, out)
		}
	}
}

package llama

import (
	"errors"
	"sync"
)

// ErrKVFull reports a KV pool with no free block.
var ErrKVFull = errors.New("llama: KV cache budget exhausted")

// KVPool is a KV-cache memory budget in fixed-size blocks, shared by the
// sequences that draw from it: a sequence holds only the blocks its
// positions fill, so short sequences leave room for more of them.
type KVPool struct {
	block, kvDim int
	k, v         [][]float32 // per layer: blocks × block × kvDim
	mu           sync.Mutex
	free         []int
}

// NewPool makes a pool of at least tokens positions in blocks of block.
func (m *Model) NewPool(tokens, block int) *KVPool {
	block = max(block, 1)
	n := max((tokens+block-1)/block, 1)
	p := &KVPool{block: block, kvDim: m.KVHeads * m.HeadDim()}
	for range m.Layers {
		p.k = append(p.k, make([]float32, n*block*p.kvDim))
		p.v = append(p.v, make([]float32, n*block*p.kvDim))
	}
	for i := n - 1; i >= 0; i-- {
		p.free = append(p.free, i)
	}
	return p
}

// Tokens is the pool's capacity in positions.
func (p *KVPool) Tokens() int { return len(p.k[0]) / p.kvDim }

// Free is the number of free blocks.
func (p *KVPool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

func (p *KVPool) take() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) == 0 {
		return 0, false
	}
	b := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return b, true
}

func (p *KVPool) give(blocks []int) {
	p.mu.Lock()
	p.free = append(p.free, blocks...)
	p.mu.Unlock()
}

// at is position pos of s in layer l: its K and V vectors.
func (s *State) at(l, pos int) (k, v []float32) {
	p := s.pool
	i := (s.blocks[pos/p.block]*p.block + pos%p.block) * p.kvDim
	return p.k[l][i : i+p.kvDim], p.v[l][i : i+p.kvDim]
}

// growTo makes sure position pos has a block.
func (s *State) growTo(pos int) error {
	for pos/s.pool.block >= len(s.blocks) {
		b, ok := s.pool.take()
		if !ok {
			return ErrKVFull
		}
		s.blocks = append(s.blocks, b)
	}
	return nil
}

// Reset empties the sequence, returning its blocks to the pool.
func (s *State) Reset() {
	s.pool.give(s.blocks)
	s.blocks = s.blocks[:0]
	s.Pos = 0
}

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
	refs         []int32 // sequences holding each block (forks share blocks)
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
	p.refs = make([]int32, n)
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
	p.refs[b] = 1
	return b, true
}

// give lets go of blocks; a block is free once no sequence holds it.
func (p *KVPool) give(blocks []int) {
	p.mu.Lock()
	for _, b := range blocks {
		if p.refs[b]--; p.refs[b] == 0 {
			p.free = append(p.free, b)
		}
	}
	p.mu.Unlock()
}

// Fork makes s a copy of src's sequence: the same positions, holding
// src's KV blocks with it. A shared block is copied when either sequence
// writes into it (the last, partly filled one, as both go on), so a
// prompt's KV cache is computed and kept once for several continuations.
func (s *State) Fork(src *State) error {
	if s.pool != src.pool {
		return errors.New("llama: fork across KV pools")
	}
	s.Reset()
	p := s.pool
	p.mu.Lock()
	for _, b := range src.blocks {
		p.refs[b]++
	}
	p.mu.Unlock()
	s.blocks = append(s.blocks, src.blocks...)
	s.Pos = src.Pos
	return nil
}

// own makes the block holding pos s's alone, copying it if it is shared.
func (s *State) own(pos int) error {
	p := s.pool
	i := pos / p.block
	b := s.blocks[i]
	p.mu.Lock()
	shared := p.refs[b] > 1
	p.mu.Unlock()
	if !shared {
		return nil
	}
	nb, ok := p.take()
	if !ok {
		return ErrKVFull
	}
	n := p.block * p.kvDim
	for l := range p.k {
		copy(p.k[l][nb*n:(nb+1)*n], p.k[l][b*n:(b+1)*n])
		copy(p.v[l][nb*n:(nb+1)*n], p.v[l][b*n:(b+1)*n])
	}
	p.give([]int{b})
	s.blocks[i] = nb
	return nil
}

// at is position pos of s in layer l: its K and V vectors.
func (s *State) at(l, pos int) (k, v []float32) {
	p := s.pool
	i := (s.blocks[pos/p.block]*p.block + pos%p.block) * p.kvDim
	return p.k[l][i : i+p.kvDim], p.v[l][i : i+p.kvDim]
}

// growTo makes sure position pos has a block of s's own to write.
func (s *State) growTo(pos int) error {
	for pos/s.pool.block >= len(s.blocks) {
		b, ok := s.pool.take()
		if !ok {
			return ErrKVFull
		}
		s.blocks = append(s.blocks, b)
	}
	return s.own(pos)
}

// Reset empties the sequence, returning its blocks to the pool.
func (s *State) Reset() {
	s.pool.give(s.blocks)
	s.blocks = s.blocks[:0]
	s.Pos = 0
}

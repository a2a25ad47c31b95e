package llama

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// MulMat computes ys[b] = M xs[b] for every vector of the batch, reading
// each weight row once for the whole batch (where batching pays on a CPU:
// decoding is memory-bound). Rows are split across cores.
func (m *Matrix) MulMat(ys, xs [][]float32) {
	work := m.Rows * m.Cols * len(xs)
	parts := runtime.GOMAXPROCS(0)
	if work < 1<<16 || parts == 1 {
		m.mulRows(ys, xs, 0, m.Rows)
		return
	}
	var wg sync.WaitGroup
	step := (m.Rows + parts - 1) / parts
	for lo := 0; lo < m.Rows; lo += step {
		hi := min(lo+step, m.Rows)
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.mulRows(ys, xs, lo, hi)
		}()
	}
	wg.Wait()
}

func (m *Matrix) mulRows(ys, xs [][]float32, lo, hi int) {
	switch m.Type {
	case gguf.Q8_0:
		blocks := m.Cols / gguf.Q8Block
		rowBytes := blocks * (2 + gguf.Q8Block)
		for r := lo; r < hi; r++ {
			row := m.Data[r*rowBytes : (r+1)*rowBytes]
			for b, x := range xs {
				var s float32
				for k := range blocks {
					blk := row[k*(2+gguf.Q8Block) : (k+1)*(2+gguf.Q8Block)]
					xk := x[k*gguf.Q8Block : (k+1)*gguf.Q8Block]
					var bs float32
					for i, q := range blk[2:] {
						bs += float32(int8(q)) * xk[i]
					}
					s += F16(binary.LittleEndian.Uint16(blk)) * bs
				}
				ys[b][r] = s
			}
		}
	default:
		w := make([]float32, m.Cols)
		for r := lo; r < hi; r++ {
			if m.Type == gguf.F32 {
				b := m.Data[r*m.Cols*4 : (r+1)*m.Cols*4]
				for i := range w {
					w[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
				}
			} else {
				m.Row(r, w)
			}
			for b, x := range xs {
				var s float32
				for i, v := range w {
					s += v * x[i]
				}
				ys[b][r] = s
			}
		}
	}
}

// ForwardBatch feeds one token to each state (each at its own position)
// in one pass over the weights, leaving each state's next-token logits.
func (m *Model) ForwardBatch(states []*State, tokens []int) error {
	if len(states) != len(tokens) {
		return fmt.Errorf("%d states for %d tokens", len(states), len(tokens))
	}
	for i, s := range states {
		if tokens[i] < 0 || tokens[i] >= m.Vocab {
			return fmt.Errorf("token %d is outside the vocabulary (0..%d)", tokens[i], m.Vocab-1)
		}
		if s.Pos >= s.Cap {
			return fmt.Errorf("position %d is past the context length %d", s.Pos, s.Cap)
		}
	}
	n := len(states)
	col := func(f func(*State) []float32) [][]float32 {
		out := make([][]float32, n)
		for i, s := range states {
			out[i] = f(s)
		}
		return out
	}
	hd, kvDim, group := m.HeadDim(), m.KVHeads*m.HeadDim(), m.Heads/m.KVHeads
	hs, qs, atts, os, gs, us := col(func(s *State) []float32 { return s.h }), col(func(s *State) []float32 { return s.q }),
		col(func(s *State) []float32 { return s.att }), col(func(s *State) []float32 { return s.o }),
		col(func(s *State) []float32 { return s.g }), col(func(s *State) []float32 { return s.u })
	for i, s := range states {
		m.embd.Row(tokens[i], s.x)
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	for l := range m.layers {
		L := &m.layers[l]
		ks, vs := make([][]float32, n), make([][]float32, n)
		for i, s := range states {
			rmsnorm(s.h, s.x, L.attnNorm, m.RMSEps)
			ks[i] = s.k[l][s.Pos*kvDim : (s.Pos+1)*kvDim]
			vs[i] = s.v[l][s.Pos*kvDim : (s.Pos+1)*kvDim]
		}
		L.wq.MulMat(qs, hs)
		L.wk.MulMat(ks, hs)
		L.wv.MulMat(vs, hs)
		for i, s := range states {
			for h := range m.Heads {
				m.rope(s.q[h*hd:(h+1)*hd], s.Pos)
			}
			for h := range m.KVHeads {
				m.rope(ks[i][h*hd:(h+1)*hd], s.Pos)
			}
			m.attend(s, l, hd, kvDim, group, scale)
		}
		L.wo.MulMat(os, atts)
		for _, s := range states {
			for i := range s.x {
				s.x[i] += s.o[i]
			}
			rmsnorm(s.h, s.x, L.ffnNorm, m.RMSEps)
		}
		L.gate.MulMat(gs, hs)
		L.up.MulMat(us, hs)
		for _, s := range states {
			for i := range s.g {
				g := s.g[i]
				s.g[i] = g / (1 + float32(math.Exp(float64(-g)))) * s.u[i]
			}
		}
		L.down.MulMat(os, gs)
		for _, s := range states {
			for i := range s.x {
				s.x[i] += s.o[i]
			}
		}
	}
	for _, s := range states {
		rmsnorm(s.h, s.x, m.norm, m.RMSEps)
	}
	m.output.MulMat(col(func(s *State) []float32 { return s.Logits }), hs)
	for _, s := range states {
		s.Pos++
	}
	return nil
}

// attend computes one sequence's attention output for its current
// position into s.att.
func (m *Model) attend(s *State, l, hd, kvDim, group int, scale float32) {
	for h := range m.Heads {
		q := s.q[h*hd : (h+1)*hd]
		kvh := h / group
		sc := s.score[:s.Pos+1]
		mx := float32(math.Inf(-1))
		for p := range sc {
			k := s.k[l][p*kvDim+kvh*hd : p*kvDim+(kvh+1)*hd]
			var d float32
			for i := range q {
				d += q[i] * k[i]
			}
			sc[p] = d * scale
			mx = max(mx, sc[p])
		}
		var sum float32
		for p := range sc {
			sc[p] = float32(math.Exp(float64(sc[p] - mx)))
			sum += sc[p]
		}
		out := s.att[h*hd : (h+1)*hd]
		clear(out)
		for p := range sc {
			w := sc[p] / sum
			v := s.v[l][p*kvDim+kvh*hd : p*kvDim+(kvh+1)*hd]
			for i := range out {
				out[i] += w * v[i]
			}
		}
	}
}

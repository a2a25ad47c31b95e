package llama

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// MulMat computes ys[b] = M xs[b] for every vector of the batch, reading
// each weight row once for the whole batch (where batching pays on a CPU:
// decoding is memory-bound). Rows are shared out across cores.
func (m *Matrix) MulMat(ys, xs [][]float32) { mulAll(xs, nil, product{m, ys}) }

// product is one matrix of mulAll and where its results go.
type product struct {
	m  *Matrix
	ys [][]float32
}

// mulAll computes several products of the same inputs (Q, K and V; gate
// and up) as one parallel pass over all their rows: the inputs are
// quantised once and the cores are woken once. With then, the matrices
// have the same number of rows and are shared out by row: then(lo, hi)
// runs once rows lo..hi of every product are done (the SwiGLU of gate and
// up, on the core that has them in cache).
func mulAll(xs [][]float32, then func(lo, hi int), ps ...product) {
	var qs []qvec
	rows := 0
	for _, p := range ps {
		rows += p.m.Rows
		if p.m.intDot() && qs == nil {
			// The vectors are quantised once, before the rows are shared out.
			qs = make([]qvec, len(xs))
			for b, x := range xs {
				quantizeVec(&qs[b], x[:p.m.Cols])
			}
		}
	}
	cols := ps[0].m.Cols
	if then != nil {
		n := ps[0].m.Rows
		parallelFor(n, max(8, n/(8*runtime.GOMAXPROCS(0))), func(lo, hi int) {
			for _, p := range ps {
				p.m.mulRows(p.ys, xs, qs, lo, hi)
			}
			then(lo, hi)
		})
		return
	}
	if rows*cols*len(xs) < 1<<16 {
		for _, p := range ps {
			p.m.mulRows(p.ys, xs, qs, 0, p.m.Rows)
		}
		return
	}
	// Chunks of rows in the concatenation of the matrices, several per
	// core, taken in turn by whichever core is free.
	chunk := max(8, rows/(8*runtime.GOMAXPROCS(0)))
	parallelFor(rows, chunk, func(lo, hi int) {
		base := 0
		for _, p := range ps {
			if a, b := max(lo, base), min(hi, base+p.m.Rows); a < b {
				p.m.mulRows(p.ys, xs, qs, a-base, b-base)
			}
			base += p.m.Rows
		}
	})
}

func (m *Matrix) mulRows(ys, xs [][]float32, qs []qvec, lo, hi int) {
	if m.Type == gguf.Q8_0 {
		rowBytes := m.Cols / gguf.Q8Block * q8BlockBytes
		r := lo
		var out [4]float32
		var out8 [8]float32
		var out16 [16]float32
		for ; r+4 <= hi; r += 4 {
			rows := m.Data[r*rowBytes : (r+4)*rowBytes]
			b := 0
			for ; b+4 <= len(qs) && useAVX2 && useVNNI; b += 4 {
				// Four vectors at once (sixteen accumulators).
				dotQ8x4x4(rows, rowBytes, qs[b:b+4], &out16)
				for v := range 4 {
					ys[b+v][r], ys[b+v][r+1], ys[b+v][r+2], ys[b+v][r+3] = out16[v], out16[4+v], out16[8+v], out16[12+v]
				}
			}
			for ; b+2 <= len(qs) && useAVX2; b += 2 {
				// Two vectors at once (each row's block loaded once for both).
				dotQ8x4x2(rows, rowBytes, &qs[b], &qs[b+1], &out8)
				ys[b][r], ys[b][r+1], ys[b][r+2], ys[b][r+3] = out8[0], out8[2], out8[4], out8[6]
				ys[b+1][r], ys[b+1][r+1], ys[b+1][r+2], ys[b+1][r+3] = out8[1], out8[3], out8[5], out8[7]
			}
			for ; b < len(qs); b++ {
				dotQ8x4(rows, rowBytes, &qs[b], &out)
				ys[b][r], ys[b][r+1], ys[b][r+2], ys[b][r+3] = out[0], out[1], out[2], out[3]
			}
		}
		for ; r < hi; r++ {
			row := m.Data[r*rowBytes : (r+1)*rowBytes]
			for b := range qs {
				ys[b][r] = dotQ8(row, &qs[b])
			}
		}
		return
	}
	if m.intDot() {
		rb := m.rowBytes()
		// Two vectors per call where a kernel takes them.
		var pair func(row []byte, x0, x1 *qvec, out *[2]float32)
		if useAVX2 && m.Cols >= gguf.QKBlock {
			switch m.Type {
			case gguf.Q4_K:
				pair = dotQ4Kx2
			case gguf.Q5_K:
				pair = dotQ5Kx2
			case gguf.Q6_K:
				pair = dotQ6Kx2
			}
		}
		var out [2]float32
		for r := lo; r < hi; r++ {
			row := m.Data[r*rb : (r+1)*rb]
			b := 0
			for ; pair != nil && b+2 <= len(qs); b += 2 {
				pair(row, &qs[b], &qs[b+1], &out)
				ys[b][r], ys[b+1][r] = out[0], out[1]
			}
			for ; b < len(qs); b++ {
				ys[b][r] = dotQuant(m.Type, row, &qs[b])
			}
		}
		return
	}
	if (m.Type == gguf.F16 || m.Type == gguf.BF16) && useAVX2 && m.Cols%32 == 0 {
		// Half precision converted in the kernel (F16C, or bfloat16's
		// shift), no row buffer.
		kernel := dotF16AVX2
		if m.Type == gguf.BF16 {
			kernel = dotBF16AVX2
		}
		var out [2]float32
		for r := lo; r < hi; r++ {
			row := unsafe.Slice((*uint16)(unsafe.Pointer(&m.Data[r*m.Cols*2])), m.Cols)
			b := 0
			for ; m.Type == gguf.F16 && b+2 <= len(xs); b += 2 {
				// Two vectors per converted chunk (bit-identical to one).
				dotF16x2AVX2(&row[0], &xs[b][0], &xs[b+1][0], m.Cols, &out)
				ys[b][r], ys[b+1][r] = out[0], out[1]
			}
			for ; b < len(xs); b++ {
				ys[b][r] = kernel(&row[0], &xs[b][0], m.Cols)
			}
		}
		return
	}
	// Each row is made float32 once (in place for F32 on a little-endian
	// machine, converted into a buffer otherwise) and then dotted with
	// every vector of the batch: the row's cost is paid once per step.
	var buf []float32
	f32 := m.Type == gguf.F32 && nativeF32
	if !f32 {
		buf = make([]float32, m.Cols)
	}
	for r := lo; r < hi; r++ {
		w := buf
		if f32 {
			w = floats(m.Data[r*m.Cols*4 : (r+1)*m.Cols*4])
		} else {
			m.Row(r, w)
		}
		for b, x := range xs {
			ys[b][r] = dot(w, x)
		}
	}
}

// Feed is tokens to append to one sequence.
type Feed struct {
	S      *State
	Tokens []int
}

// ForwardBatch feeds one token to each state (each at its own position)
// in one pass over the weights, leaving each state's next-token logits.
func (m *Model) ForwardBatch(states []*State, tokens []int) error {
	if len(states) != len(tokens) {
		return fmt.Errorf("%d states for %d tokens", len(states), len(tokens))
	}
	feeds := make([]Feed, len(states))
	for i, s := range states {
		feeds[i] = Feed{S: s, Tokens: tokens[i : i+1]}
	}
	return m.Run(feeds)
}

// row is one position being computed.
type row struct {
	s   *State
	pos int
	sc  *scratch
}

// Run feeds every feed's tokens in one pass over the weights: all the
// positions of all the sequences are rows of one batch (a prompt chunk is
// prefilled at once), attention stays causal, and each state is left with
// the logits after its last token.
func (m *Model) Run(feeds []Feed) error {
	var rows []row
	var last []row
	for _, f := range feeds {
		s := f.S
		for j, tok := range f.Tokens {
			if tok < 0 || tok >= m.Vocab {
				return fmt.Errorf("token %d is outside the vocabulary (0..%d)", tok, m.Vocab-1)
			}
			pos := s.Pos + j
			if pos >= s.Cap {
				return fmt.Errorf("position %d is past the context length %d", pos, s.Cap)
			}
			if err := s.growTo(pos); err != nil {
				return err
			}
			r := row{s: s, pos: pos, sc: s.scratchFor(m, j)}
			m.embd.Row(tok, r.sc.x)
			rows = append(rows, r)
		}
		if len(f.Tokens) > 0 {
			last = append(last, rows[len(rows)-1])
		}
	}
	n := len(rows)
	maxPos, attWork := 0, 0
	for _, r := range rows {
		maxPos = max(maxPos, r.pos)
		attWork += (r.pos + 1) * m.Heads * m.HeadDim()
	}
	col := func(f func(*scratch) []float32) [][]float32 {
		out := make([][]float32, n)
		for i, r := range rows {
			out[i] = f(r.sc)
		}
		return out
	}
	hd, group := m.HeadDim(), m.Heads/m.KVHeads
	hs, qs, atts, os, gs, us := col(func(c *scratch) []float32 { return c.h }), col(func(c *scratch) []float32 { return c.q }),
		col(func(c *scratch) []float32 { return c.att }), col(func(c *scratch) []float32 { return c.o }),
		col(func(c *scratch) []float32 { return c.g }), col(func(c *scratch) []float32 { return c.u })
	scale := float32(1 / math.Sqrt(float64(hd)))
	ks, vs := make([][]float32, n), make([][]float32, n)
	for l := range m.layers {
		L := &m.layers[l]
		for i, r := range rows {
			rmsnorm(r.sc.h, r.sc.x, L.attnNorm, m.RMSEps)
			ks[i], vs[i] = r.s.at(l, r.pos)
		}
		mulAll(hs, nil, product{&L.wq, qs}, product{&L.wk, ks}, product{&L.wv, vs})
		for i, r := range rows {
			addBias(r.sc.q, L.bq)
			addBias(ks[i], L.bk)
			addBias(vs[i], L.bv)
			if L.qNorm != nil { // QK-norm, per head, before RoPE
				for h := range m.Heads {
					q := r.sc.q[h*hd : (h+1)*hd]
					rmsnorm(q, q, L.qNorm, m.RMSEps)
				}
				for h := range m.KVHeads {
					k := ks[i][h*hd : (h+1)*hd]
					rmsnorm(k, k, L.kNorm, m.RMSEps)
				}
			}
			for h := range m.Heads {
				m.rope(r.sc.q[h*hd:(h+1)*hd], r.pos)
			}
			for h := range m.KVHeads {
				m.rope(ks[i][h*hd:(h+1)*hd], r.pos)
			}
		}
		// Every row's K and V of this layer is written: attention is
		// causal over positions up to each row's own, one task per row
		// and head.
		tasks := n * m.Heads
		chunk := tasks // short contexts: not worth waking another core
		if attWork > 1<<12 {
			chunk = max(1, tasks/(8*runtime.GOMAXPROCS(0)))
		}
		parallelFor(tasks, chunk, func(lo, hi int) {
			score := make([]float32, maxPos+1)
			for t := lo; t < hi; t++ {
				m.attend(rows[t/m.Heads], t%m.Heads, l, hd, group, scale, score)
			}
		})
		L.wo.MulMat(os, atts)
		for _, r := range rows {
			if L.postAttnNorm != nil {
				rmsnorm(r.sc.o, r.sc.o, L.postAttnNorm, m.RMSEps)
			}
			for i := range r.sc.x {
				r.sc.x[i] += r.sc.o[i]
			}
			rmsnorm(r.sc.h, r.sc.x, L.ffnNorm, m.RMSEps)
		}
		mulAll(hs, func(lo, hi int) {
			for _, r := range rows {
				siluMul(r.sc.g[lo:hi], r.sc.u[lo:hi])
			}
		}, product{&L.gate, gs}, product{&L.up, us})
		L.down.MulMat(os, gs)
		for _, r := range rows {
			if L.postFFNNorm != nil {
				rmsnorm(r.sc.o, r.sc.o, L.postFFNNorm, m.RMSEps)
			}
			for i := range r.sc.x {
				r.sc.x[i] += r.sc.o[i]
			}
		}
	}
	// Embeddings pool the final hidden states of every row they ask for.
	for _, r := range rows {
		if r.s.Pool == PoolMean {
			rmsnorm(r.sc.h, r.sc.x, m.norm, m.RMSEps)
			r.s.Pooled = grow(r.s.Pooled, m.Embd)
			for i, v := range r.sc.h {
				r.s.Pooled[i] += v
			}
			r.s.PoolN++
		}
	}
	// Logits only where a sequence's last token was fed.
	lh, logits := make([][]float32, len(last)), make([][]float32, len(last))
	for i, r := range last {
		rmsnorm(r.sc.h, r.sc.x, m.norm, m.RMSEps)
		lh[i], logits[i] = r.sc.h, r.s.Logits
		if r.s.Pool == PoolLast {
			r.s.Pooled = append(r.s.Pooled[:0], r.sc.h...)
			r.s.PoolN = 1
		}
	}
	m.output.MulMat(logits, lh)
	for _, f := range feeds {
		f.S.Pos += len(f.Tokens)
	}
	return nil
}

// siluMul is g = silu(g)·u, SwiGLU's gating.
func siluMul(g, u []float32) {
	n8 := 0
	if useAVX2 {
		if n8 = len(g) &^ 7; n8 > 0 {
			siluMulAVX2(&g[0], &u[0], n8)
		}
	}
	for i := n8; i < len(g); i++ {
		g[i] = g[i] / (1 + float32(math.Exp(float64(-g[i])))) * u[i]
	}
}

// attend computes a row's attention output for head h over its sequence's
// positions up to its own; score is scratch of at least pos+1.
func (m *Model) attend(r row, h, l, hd, group int, scale float32, score []float32) {
	s := r.s
	q := r.sc.q[h*hd : (h+1)*hd]
	kvh := h / group
	sc := score[:r.pos+1]
	out := r.sc.att[h*hd : (h+1)*hd]
	clear(out)
	if useAVX2 && hd%8 == 0 {
		// A KV block's positions are contiguous: one kernel call per
		// block for the scores and one for the weighted values.
		blk, stride := s.pool.block, s.pool.kvDim
		for p0 := 0; p0 < len(sc); p0 += blk {
			k, _ := s.at(l, p0)
			attnScoresAVX2(&q[0], &k[kvh*hd], stride, hd, min(blk, len(sc)-p0), scale, &sc[p0])
		}
		mx := float32(math.Inf(-1))
		for _, v := range sc {
			mx = max(mx, v)
		}
		n8 := len(sc) &^ 7
		var sum float32
		if n8 > 0 {
			sum = expSubAVX2(&sc[0], n8, mx)
		}
		for p := n8; p < len(sc); p++ {
			sc[p] = float32(math.Exp(float64(sc[p] - mx)))
			sum += sc[p]
		}
		inv := 1 / sum
		for p := range sc {
			sc[p] *= inv
		}
		for p0 := 0; p0 < len(sc); p0 += blk {
			_, v := s.at(l, p0)
			attnAccumAVX2(&out[0], &sc[p0], &v[kvh*hd], stride, hd, min(blk, len(sc)-p0))
		}
		return
	}
	mx := float32(math.Inf(-1))
	for p := range sc {
		kp, _ := s.at(l, p)
		k := kp[kvh*hd : (kvh+1)*hd]
		sc[p] = dot(q, k) * scale
		mx = max(mx, sc[p])
	}
	var sum float32
	for p := range sc {
		sc[p] = float32(math.Exp(float64(sc[p] - mx)))
		sum += sc[p]
	}
	for p := range sc {
		w := sc[p] / sum
		_, vp := s.at(l, p)
		v := vp[kvh*hd : (kvh+1)*hd]
		axpy(out, w, v)
	}
}

// nativeF32 is whether float32 bytes in the file (little-endian) can be
// used in place on this machine.
var nativeF32 = func() bool {
	x := uint32(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// floats views little-endian float32 bytes as []float32 without copying
// (the data is 4-byte aligned: GGUF aligns tensors to at least 32 bytes
// from an aligned mapping or allocation); unaligned data is copied.
func floats(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		out := make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
		}
		return out
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// addBias adds b (nil: none) to x.
func addBias(x, b []float32) {
	for i, v := range b {
		x[i] += v
	}
}

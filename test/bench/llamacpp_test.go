package bench

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/llama"
	"github.com/open-autoglm/autoglm/internal/toolcache"
)

// benchRecipePath is the benchmark model quantised by llama.Quantize
// (Q4_K_M, Q4_0), written once per process.
func benchRecipePath(b *testing.B, recipe string) string {
	src := benchModelPath(b, gguf.F32)
	modelMu.Lock()
	defer modelMu.Unlock()
	p := filepath.Join(modelDir, recipe+".gguf")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	in, err := gguf.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := llama.Quantize(in, w, recipe); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return p
}

// benchFiles are the model files BenchmarkVsLlamaCpp measures: the
// generated ones, or the file AUTOGLM_BENCH_MODEL names (any GGUF the
// native engine loads, so the figures can be checked with other tools).
func benchFiles(b *testing.B) map[string]string {
	if p := os.Getenv("AUTOGLM_BENCH_MODEL"); p != "" {
		return map[string]string{filepath.Base(p): p}
	}
	files := map[string]string{}
	for _, name := range strings.Split(os.Getenv("AUTOGLM_BENCH_TYPES"), ",") {
		switch name {
		case "F32", "F16", "Q8_0":
			typ := map[string]gguf.TensorType{"F32": gguf.F32, "F16": gguf.F16, "Q8_0": gguf.Q8_0}[name]
			files[name] = benchModelPath(b, typ)
		case "Q4_K_M", "Q4_0":
			files[name] = benchRecipePath(b, name)
		case "":
		default:
			b.Fatalf("AUTOGLM_BENCH_TYPES: unknown type %q", name)
		}
	}
	if len(files) == 0 {
		files["Q8_0"] = benchModelPath(b, gguf.Q8_0)
		files["Q4_K_M"] = benchRecipePath(b, "Q4_K_M")
		files["F16"] = benchModelPath(b, gguf.F16)
	}
	return files
}

// speed is one engine's figures on one file.
type speed struct {
	Prefill float64 `json:"prefill"` // prompt tokens/s, 512 tokens in one pass
	Decode  float64 `json:"decode"`  // tokens/s, one stream, one token per step
	Streams float64 `json:"streams"` // tokens/s, 16 streams decoding together
}

const (
	vsPrompt       = 512
	vsDecode       = 64
	vsStreams      = 16
	vsStreamTokens = 32
)

// BenchmarkVsLlamaCpp: the native engine and llama.cpp (node-llama-cpp's
// prebuilt CPU build, installed by make node-sdk) on the same file and
// the same cores, side by side in one run: prefill of a 512-token prompt,
// single-stream decode, and 16 streams decoding together. Both engines
// are driven at the level of their model API (no HTTP), with as many
// threads as GOMAXPROCS. Reported per file: each engine's tokens/s and
// the native engine's as a fraction of llama.cpp's.
func BenchmarkVsLlamaCpp(b *testing.B) {
	modules := toolcache.NodeModules(b)
	bw, peak := readBandwidth(), peakMACs()
	b.Logf("bandwidth %.1f GB/s, int8 multiply-adds %.1f G/s (Q8_0 kernel, cache-resident, all cores)", bw/1e9, peak/1e9)
	for name, path := range benchFiles(b) {
		b.Run(name, func(b *testing.B) {
			// llama.cpp at its best thread count for each figure: on this
			// 2-vCPU machine two threads of its spinning pool (next to
			// Node's own threads) decode 3× slower than one.
			var ref speed
			for th := 1; th <= threads(); th++ {
				var r speed
				toolcache.RunNode(b, "../nodesdk/speed.mjs", map[string]int{
					"threads": th, "prompt": vsPrompt, "decode": vsDecode, "streams": vsStreams, "streamTokens": vsStreamTokens,
				}, &r, modules, path)
				b.Logf("llama.cpp, %d threads: %+v", th, r)
				ref.Prefill, ref.Decode, ref.Streams = max(ref.Prefill, r.Prefill), max(ref.Decode, r.Decode), max(ref.Streams, r.Streams)
			}
			own := nativeSpeed(b, path)
			b.Logf("native: %+v", own)
			b.ReportMetric(own.Prefill, "prefill-tok/s")
			b.ReportMetric(ref.Prefill, "llamacpp-prefill-tok/s")
			b.ReportMetric(own.Prefill/ref.Prefill, "prefill-ratio")
			b.ReportMetric(own.Decode, "decode-tok/s")
			b.ReportMetric(ref.Decode, "llamacpp-decode-tok/s")
			b.ReportMetric(own.Decode/ref.Decode, "decode-ratio")
			b.ReportMetric(own.Streams, "streams16-tok/s")
			b.ReportMetric(ref.Streams, "llamacpp-streams16-tok/s")
			b.ReportMetric(own.Streams/ref.Streams, "streams16-ratio")
			// Bounds on this machine: prefill by compute (multiply-adds per
			// token at the kernel's peak), decode by bandwidth (bytes read
			// per token).
			f, err := gguf.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			macs, bytes := macsPerToken(f), weightBytesPerToken(f)
			f.Close()
			b.ReportMetric(own.Prefill/(peak/macs), "prefill-of-compute-bound")
			b.ReportMetric(ref.Prefill/(peak/macs), "llamacpp-prefill-of-compute-bound")
			b.ReportMetric(own.Decode/(bw/bytes), "decode-of-bandwidth-bound")
			b.ReportMetric(ref.Decode/(bw/bytes), "llamacpp-decode-of-bandwidth-bound")
			b.Logf("%s: %.0f M multiply-adds and %.1f MB per token; bounds: compute %.0f tok/s, bandwidth %.0f tok/s", name, macs/1e6, bytes/1e6, peak/macs, bw/bytes)
		})
	}
}

func threads() int {
	n := 0
	if s := os.Getenv("GOMAXPROCS"); s != "" {
		fmt.Sscan(s, &n)
	}
	if n <= 0 {
		n = runtimeProcs()
	}
	return n
}

// nativeSpeed measures the native engine as speed.mjs measures llama.cpp.
func nativeSpeed(b *testing.B, path string) speed {
	f, err := gguf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	m, err := llama.Load(f)
	if err != nil {
		b.Fatal(err)
	}
	tok := func(i int) int { return 300 + (i*7919)%30000 }
	var r speed
	s := m.NewStateCap(vsPrompt + vsDecode + 8)
	if err := m.Forward(s, tok(1)); err != nil { // warm
		b.Fatal(err)
	}
	s.Reset()
	prompt := make([]int, vsPrompt)
	for i := range prompt {
		prompt[i] = tok(i)
	}
	t0 := time.Now()
	if err := m.Run([]llama.Feed{{S: s, Tokens: prompt}}); err != nil {
		b.Fatal(err)
	}
	r.Prefill = vsPrompt / time.Since(t0).Seconds()
	s.Reset()
	if err := m.Forward(s, tok(2)); err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	for i := range vsDecode {
		if err := m.Forward(s, tok(3+i)); err != nil {
			b.Fatal(err)
		}
	}
	r.Decode = vsDecode / time.Since(t0).Seconds()
	states := make([]*llama.State, vsStreams)
	toks := make([]int, vsStreams)
	for j := range states {
		states[j] = m.NewStateCap(vsStreamTokens + 8)
		toks[j] = tok(j)
	}
	if err := m.ForwardBatch(states, toks); err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	for i := range vsStreamTokens {
		for j := range toks {
			toks[j] = tok(100*j + i)
		}
		if err := m.ForwardBatch(states, toks); err != nil {
			b.Fatal(err)
		}
	}
	r.Streams = vsStreams * vsStreamTokens / time.Since(t0).Seconds()
	return r
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// macsPerToken is the multiply-adds of one token's matrix products: every
// matrix but the token embedding (of which one row is read).
func macsPerToken(f *gguf.File) float64 {
	var n float64
	for _, t := range f.Tensors {
		if len(t.Dims) == 2 && t.Name != "token_embd.weight" {
			n += float64(t.Dims[0]) * float64(t.Dims[1])
		}
	}
	if _, ok := f.Tensor("output.weight"); !ok { // tied: the embedding is the output
		if t, ok := f.Tensor("token_embd.weight"); ok {
			n += float64(t.Dims[0]) * float64(t.Dims[1])
		}
	}
	return n
}

// peakMACs is the int8 multiply-adds per second of the Q8_0 kernel on
// cache-resident data with all cores: a 2048×768 matrix (1.6 MB, in L3)
// times 64 vectors,
// the best of 5.
func peakMACs() float64 {
	const rows, cols, vecs = 2048, 768, 64
	rng := rand.New(rand.NewPCG(1, 1))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	m := llama.Matrix{Rows: rows, Cols: cols, Type: gguf.Q8_0, Data: llama.QuantizeQ8(w)}
	xs, ys := make([][]float32, vecs), make([][]float32, vecs)
	for i := range xs {
		xs[i], ys[i] = w[i*cols:(i+1)*cols], make([]float32, rows)
	}
	best := 0.0
	for range 5 {
		t0 := time.Now()
		for range 4 {
			m.MulMat(ys, xs)
		}
		best = max(best, 4*rows*cols*vecs/time.Since(t0).Seconds())
	}
	return best
}

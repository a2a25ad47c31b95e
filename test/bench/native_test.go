package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/llama"
	"github.com/open-autoglm/autoglm/inference/llama/tiny"
	"github.com/open-autoglm/autoglm/inference/native"
	"github.com/open-autoglm/autoglm/inference/tokenizer"
	"github.com/open-autoglm/autoglm/sidecar/batch"
)

// benchModel is the generated ~100M-parameter model of the native engine's
// benchmarks: 12 layers of 768 with grouped-query attention (12 heads, 4
// KV heads) and an MLP of 2048, a 32k vocabulary, untied output: 100M
// parameters are read per token (the layers and the output matrix), 125M
// in all with the token embedding.
func benchModel(typ gguf.TensorType) tiny.Config {
	return tiny.Config{Vocab: benchVocabSize, Embd: 768, Layers: 12, Heads: 12, KVHeads: 4, FF: 2048, Context: 2048, Type: typ, Seed: 7}
}

const benchVocabSize = 32000

var (
	modelMu    sync.Mutex
	modelPaths = map[gguf.TensorType]string{}
	modelDir   string
)

// benchModelPath writes the model once per process (a few seconds).
func benchModelPath(b *testing.B, typ gguf.TensorType) string {
	modelMu.Lock()
	defer modelMu.Unlock()
	if p, ok := modelPaths[typ]; ok {
		return p
	}
	if modelDir == "" {
		d, err := os.MkdirTemp("", "autoglm-bench-models-")
		if err != nil {
			b.Fatal(err)
		}
		modelDir = d
	}
	p := filepath.Join(modelDir, typ.String()+".gguf")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := tiny.WriteWith(w, benchModel(typ), benchVocab()); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	modelPaths[typ] = p
	return p
}

// benchVocab is a byte-level vocabulary of benchVocabSize tokens: the
// letter pairs, then pairs of those.
func benchVocab() []gguf.KV {
	var merges [][2]string
	var pairs []string
	for a := 'a'; a <= 'z'; a++ {
		for c := 'a'; c <= 'z'; c++ {
			merges = append(merges, [2]string{string(a), string(c)})
			pairs = append(pairs, string(a)+string(c))
		}
	}
	for _, x := range pairs {
		for _, y := range pairs {
			if 256+len(merges)+3 == benchVocabSize {
				return tokenizer.Vocabulary(merges)
			}
			merges = append(merges, [2]string{x, y})
		}
	}
	return tokenizer.Vocabulary(merges)
}

// readBandwidth measures the memory read bandwidth (bytes/s) with all
// cores summing a 512 MiB buffer, far beyond any cache; the best of 5.
func readBandwidth() float64 {
	buf := make([]uint64, 512<<20/8)
	for i := range buf {
		buf[i] = uint64(i)
	}
	parts := runtime.GOMAXPROCS(0)
	var sink atomic.Uint64
	best := 0.0
	for range 5 {
		t0 := time.Now()
		var wg sync.WaitGroup
		n := len(buf) / parts
		for p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var s0, s1, s2, s3 uint64
				c := buf[p*n : (p+1)*n]
				for i := 0; i+4 <= len(c); i += 4 {
					s0 += c[i]
					s1 += c[i+1]
					s2 += c[i+2]
					s3 += c[i+3]
				}
				sink.Add(s0 + s1 + s2 + s3)
			}()
		}
		wg.Wait()
		best = max(best, float64(len(buf)*8)/time.Since(t0).Seconds())
	}
	return best
}

// weightBytesPerToken is what one decode step must read: every tensor but
// the token embedding, of which it reads one row.
func weightBytesPerToken(f *gguf.File) float64 {
	var n float64
	for _, t := range f.Tensors {
		if t.Name == "token_embd.weight" {
			n += float64(t.Size) / float64(t.Dims[1])
			continue
		}
		n += float64(t.Size)
	}
	return n
}

func loadBench(b *testing.B, typ gguf.TensorType) (*gguf.File, *llama.Model) {
	f, err := gguf.Open(benchModelPath(b, typ))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	m, err := llama.Load(f)
	if err != nil {
		b.Fatal(err)
	}
	return f, m
}

// BenchmarkNativeDecode: single-stream decode tokens/s of the ~100M model
// in F32 and Q8_0 against the memory-bandwidth bound (bandwidth measured
// in the same run ÷ weight bytes read per token). Goal for Q8_0: ≥ 0.7.
func BenchmarkNativeDecode(b *testing.B) {
	bw := readBandwidth()
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.Q8_0} {
		b.Run(typ.String(), func(b *testing.B) {
			f, m := loadBench(b, typ)
			per := weightBytesPerToken(f)
			s := m.NewStateCap(256)
			// Warm the page cache and the mapping: one pass over the weights.
			if err := m.Forward(s, 1); err != nil {
				b.Fatal(err)
			}
			const n = 64
			t0 := time.Now()
			for i := range n {
				if err := m.Forward(s, 2+i); err != nil {
					b.Fatal(err)
				}
			}
			tps := n / time.Since(t0).Seconds()
			bound := bw / per
			b.ReportMetric(tps, "tok/s")
			b.ReportMetric(bound, "bound-tok/s")
			b.ReportMetric(tps/bound, "of-bound")
			b.ReportMetric(per/1e6, "MB/token")
			b.ReportMetric(bw/1e9, "GB/s")
		})
	}
}

// BenchmarkNativeDecodeBatch: decode tokens/s when one step feeds 1, 4 or
// 16 sequences (Q8_0): the weights are read once per step for all of them.
func BenchmarkNativeDecodeBatch(b *testing.B) {
	_, m := loadBench(b, gguf.Q8_0)
	var single float64
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			states := make([]*llama.State, n)
			toks := make([]int, n)
			for i := range states {
				states[i] = m.NewStateCap(256)
				toks[i] = 100 + i
			}
			if err := m.ForwardBatch(states, toks); err != nil { // warm
				b.Fatal(err)
			}
			const steps = 32
			t0 := time.Now()
			for range steps {
				if err := m.ForwardBatch(states, toks); err != nil {
					b.Fatal(err)
				}
			}
			tps := float64(steps*n) / time.Since(t0).Seconds()
			if n == 1 {
				single = tps
			}
			b.ReportMetric(tps, "tok/s")
			b.ReportMetric(tps/single, "vs-batch-1")
		})
	}
}

// BenchmarkNativePrefill: prompt tokens/s for a 512-token prompt fed in
// one pass (as the scheduler's chunked prefill does, up to its token
// budget).
func BenchmarkNativePrefill(b *testing.B) {
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.Q8_0} {
		b.Run(typ.String(), func(b *testing.B) {
			_, m := loadBench(b, typ)
			prompt := make([]int, 512)
			for i := range prompt {
				prompt[i] = (i * 7919) % benchVocabSize
			}
			s := m.NewStateCap(len(prompt))
			if err := m.Forward(s, 1); err != nil { // warm
				b.Fatal(err)
			}
			s.Reset()
			t0 := time.Now()
			if err := m.Run([]llama.Feed{{S: s, Tokens: prompt}}); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(prompt))/time.Since(t0).Seconds(), "prompt-tok/s")
		})
	}
}

// BenchmarkNativeBatched: tokens/s and p99 time to first token with 1, 4
// and 16 closed-loop streams (32-token prompts, 32 new tokens) through the
// sidecar's scheduler over the native engine, Q8_0. Goal: ≥ 3× the
// single-stream throughput at 16.
func BenchmarkNativeBatched(b *testing.B) {
	e, err := native.Open(benchModelPath(b, gguf.Q8_0), native.Config{Slots: 16, ContextLength: 256})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	prompt := make([]int, 32)
	for i := range prompt {
		prompt[i] = 300 + i*97
	}
	var single float64
	for _, streams := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			r, _ := driveStreams(b, inference.Engine(e), batch.Config{MaxBatchSize: 16, MaxBatchTokens: 512}, streams, prompt, 32, 10*time.Second)
			if streams == 1 {
				single = r.tokensPerSec
			}
			b.ReportMetric(r.tokensPerSec, "tok/s")
			b.ReportMetric(float64(r.ttft.ValueAtQuantile(99))/1e3, "p99-ttft-ms")
			if single > 0 {
				b.ReportMetric(r.tokensPerSec/single, "vs-1-stream")
			}
		})
	}
}

// rssEnv makes the test binary load a model with the native engine,
// decode 16 sequences, and print its peak RSS (VmHWM) and its RSS before
// loading, in bytes.
const rssEnv = "AUTOGLM_BENCH_NATIVE_RSS"

// procStatus reads a /proc/self/status field in bytes.
func procStatus(field string) int {
	status, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb * 1024
		}
	}
	return -1
}

func nativeRSSChild(path string) {
	base := procStatus("VmRSS")
	e, err := native.Open(path, native.Config{Slots: 16, ContextLength: 256})
	if err != nil {
		fmt.Println("error", err)
		return
	}
	var in []inference.Input
	for slot := range 16 {
		if err := e.Start(slot, inference.Sampling{}); err != nil {
			fmt.Println("error", err)
			return
		}
		in = append(in, inference.Input{Slot: slot, Tokens: []int{300 + slot, 400, 500, 600}, Sample: true})
	}
	for range 16 {
		out, err := e.Step(context.Background(), in)
		if err != nil {
			fmt.Println("error", err)
			return
		}
		for i := range in {
			in[i].Tokens = []int{out[i].Token}
		}
	}
	fmt.Println(procStatus("VmHWM"), base)
}

// BenchmarkNativeRSS: peak resident memory of a process that loads the
// model (memory-mapped) and decodes 16 sequences, against the file size.
func BenchmarkNativeRSS(b *testing.B) {
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.Q8_0} {
		b.Run(typ.String(), func(b *testing.B) {
			path := benchModelPath(b, typ)
			st, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), rssEnv+"="+path)
			out, err := cmd.Output()
			line := strings.TrimSpace(string(out))
			if err != nil || strings.HasPrefix(line, "error") {
				b.Fatalf("child: %v %s", err, line)
			}
			var peak, base float64
			if _, err := fmt.Sscan(line, &peak, &base); err != nil || peak <= 0 || base <= 0 {
				b.Fatalf("child said %q", line)
			}
			b.ReportMetric(peak/1e6, "peak-RSS-MB")
			b.ReportMetric(base/1e6, "before-load-MB")
			b.ReportMetric(float64(st.Size())/1e6, "file-MB")
			b.ReportMetric(peak/float64(st.Size()), "RSS/file")
			b.ReportMetric((peak-base)/float64(st.Size()), "added/file")
		})
	}
}

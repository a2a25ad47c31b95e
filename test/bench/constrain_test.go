package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/grammar"
	"github.com/open-autoglm/autoglm/inference/native"
)

// constrainSchema is a structured-output schema of the usual shape: short
// strings, an enum, numbers, a list.
const constrainSchema = `{"type":"object","properties":{"city":{"type":"string","maxLength":24},"unit":{"enum":["celsius","fahrenheit"]},
	"temp":{"type":"number"},"days":{"type":"array","items":{"type":"object","properties":{"day":{"type":"string","maxLength":12},
	"high":{"type":"integer"},"rain":{"type":"boolean"}},"required":["day","high","rain"],"additionalProperties":false},"maxItems":5},
	"note":{"type":["string","null"],"maxLength":64}},"required":["city","unit","temp","days","note"],"additionalProperties":false}`

// BenchmarkConstrainedDecoding: aggregate decode tokens/s of 16 sequences
// of the ~100M Q8_0 model (32k vocabulary) with every sequence's output
// constrained to a JSON schema, against the same decoding unconstrained,
// side by side in one run. Goal: ≤ 10 % overhead per token at batch 16.
func BenchmarkConstrainedDecoding(b *testing.B) {
	e, err := native.Open(benchModelPath(b, gguf.Q8_0), native.Config{Slots: 16, ContextLength: 512})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	g, err := grammar.Compile([]byte(constrainSchema))
	if err != nil {
		b.Fatal(err)
	}
	const batch, steps, budget = 16, 48, 400
	var plain float64
	// Twice each, alternating: the first pass pages the weights in.
	for i, constrained := range []bool{false, true, false, true} {
		b.Run(fmt.Sprintf("pass=%d/constrained=%v", i/2+1, constrained), func(b *testing.B) {
			var masked time.Duration
			start := func(slot int) []int {
				sp := inference.Sampling{Temperature: 1, Seed: int64(slot), HasSeed: true}
				if constrained {
					c, err := e.Vocab().Constrain(g, budget)
					if err != nil {
						b.Fatal(err)
					}
					sp.Constraint = timed{c, &masked}
				}
				if err := e.Start(slot, sp); err != nil {
					b.Fatal(err)
				}
				return []int{1 + slot, 2, 3, 4}
			}
			in := make([]inference.Input, batch)
			for i := range in {
				in[i] = inference.Input{Slot: i, Tokens: start(i), Sample: true}
			}
			if _, err := e.Step(context.Background(), in); err != nil { // prefill
				b.Fatal(err)
			}
			gen := 0
			t0 := time.Now()
			for range steps {
				out, err := e.Step(context.Background(), in)
				if err != nil {
					b.Fatal(err)
				}
				for i, o := range out {
					gen++
					in[i].Tokens = []int{o.Token}
					if o.EOS { // a finished document: the slot starts another
						in[i].Tokens = start(i)
					}
				}
			}
			el := time.Since(t0)
			tps := float64(gen) / el.Seconds()
			if !constrained {
				plain = tps
			}
			b.ReportMetric(tps, "tok/s")
			b.ReportMetric(tps/plain, "vs-unconstrained")
			b.ReportMetric(float64(masked.Microseconds())/float64(gen), "mask-µs/tok")
		})
	}
}

// timed is a constraint that adds the time spent masking to d.
type timed struct {
	*grammar.Constraint
	d *time.Duration
}

func (t timed) Mask(logits []float32) {
	t0 := time.Now()
	t.Constraint.Mask(logits)
	*t.d += time.Since(t0)
}

package native

import (
	"testing"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/enginetest"
)

func TestConformance(t *testing.T) {
	enginetest.Run(t, func(t *testing.T) inference.Engine { return engine(t, 4) })
}

// TestConformanceSharedKV: the same with a KV pool smaller than the slots'
// contexts together (4 × 64 positions sharing 112), so the budget the
// engine reports is its pool's, not the slots'.
func TestConformanceSharedKV(t *testing.T) {
	enginetest.Run(t, func(t *testing.T) inference.Engine { return engine(t, 4, 112) })
}

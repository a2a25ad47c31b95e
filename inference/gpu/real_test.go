package gpu

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// TestRealDriver reads the machine's GPUs through the real NVML library.
// It needs an NVIDIA GPU and driver; machines without one skip it.
func TestRealDriver(t *testing.T) {
	m, err := Open(nvml.New(), nil)
	if errors.Is(err, ErrNoDriver) {
		t.Skipf("no NVIDIA GPU or driver here (%v): this test runs on GPU machines", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	}()
	rs := m.Read()
	if len(rs) == 0 {
		t.Fatal("no devices")
	}
	for _, r := range rs {
		if r.Name == "" || r.UUID == "" || r.MemoryTotal == 0 || r.MemoryFree > r.MemoryTotal || r.TemperatureC == 0 {
			t.Errorf("implausible reading %+v", r)
		}
		b, _ := json.Marshal(r)
		t.Logf("gpu %d: %s", r.Index, b)
	}
	if err := m.Healthy(); err != nil {
		t.Errorf("health: %v", err)
	}
	if m.FreeMemory() == 0 {
		t.Error("no free memory reported")
	}
}

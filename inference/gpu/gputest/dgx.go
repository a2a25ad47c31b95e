// Package gputest is a DGX A100 from go-nvml's own mocks
// (mock/dgxa100) with the readings that mock leaves out filled in, and an
// event queue a test feeds: for tests of code that reads GPUs.
package gputest

import (
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
)

// DGX implements nvml.Interface with 8 mock A100s: device i has i+1 GiB of
// 40 GiB used, 10*i % utilisation, 40+i °C, 250.5 W, and power-cap and
// thermal throttling.
type DGX struct {
	*dgxa100.Server
	// Events delivers NVML events to the event set's Wait.
	Events chan nvml.EventData
	mu     sync.Mutex
	ecc    [8]uint64
}

// SetECC sets device i's uncorrected ECC counter.
func (f *DGX) SetECC(i int, n uint64) {
	f.mu.Lock()
	f.ecc[i] = n
	f.mu.Unlock()
}

// NewDGX returns the mock machine.
func NewDGX() *DGX {
	f := &DGX{Server: dgxa100.New(), Events: make(chan nvml.EventData, 8)}
	for i, h := range f.Devices {
		d := h.(*dgxa100.Device)
		d.MemoryInfo = nvml.Memory{Total: 40 << 30, Used: uint64(i+1) << 30, Free: 40<<30 - uint64(i+1)<<30}
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(10 * i), Memory: 5}, nvml.SUCCESS
		}
		d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 40 + uint32(i), nvml.SUCCESS }
		d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 250_500, nvml.SUCCESS }
		d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) {
			return nvml.ClocksEventReasonSwPowerCap | nvml.ClocksThrottleReasonHwThermalSlowdown, nvml.SUCCESS
		}
		d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.ecc[i], nvml.SUCCESS
		}
		d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
			return nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError, nvml.SUCCESS
		}
		d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return nvml.SUCCESS }
	}
	f.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		return &mock.EventSet{
			WaitFunc: func(ms uint32) (nvml.EventData, nvml.Return) {
				select {
				case e := <-f.Events:
					return e, nvml.SUCCESS
				case <-time.After(time.Duration(ms) * time.Millisecond):
					return nvml.EventData{}, nvml.ERROR_TIMEOUT
				}
			},
			FreeFunc: func() nvml.Return { return nvml.SUCCESS },
		}, nvml.SUCCESS
	}
	return f
}

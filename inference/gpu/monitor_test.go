package gpu

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"

	"github.com/open-autoglm/autoglm/inference/gpu/gputest"
)

func TestReadings(t *testing.T) {
	f := gputest.NewDGX()
	m, err := Open(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rs := m.Read()
	if len(rs) != 8 {
		t.Fatalf("%d devices, want 8", len(rs))
	}
	r := rs[3]
	if r.Index != 3 || !strings.HasPrefix(r.UUID, "GPU-") || !strings.Contains(r.Name, "A100") ||
		r.MemoryTotal != 40<<30 || r.MemoryUsed != 4<<30 || r.Utilization != 0.3 || r.MemoryUtilization != 0.05 ||
		r.TemperatureC != 43 || r.PowerWatts != 250.5 || !r.Healthy() || len(r.Unsupported) != 0 {
		t.Fatalf("%+v", r)
	}
	if got := strings.Join(r.ThrottleReasons, ","); got != "hw_thermal_slowdown,sw_power_cap" {
		t.Fatalf("throttle reasons %q", got)
	}
	var free uint64
	for i := range 8 {
		free += 40<<30 - uint64(i+1)<<30
	}
	if m.FreeMemory() != free || m.Healthy() != nil {
		t.Fatalf("free %d, health %v", m.FreeMemory(), m.Healthy())
	}
	if util, mem := m.Load(); util != 0.7 || mem != 8.0/40 {
		t.Fatalf("load %v %v: want the busiest device's", util, mem)
	}
	if KVTokens(10<<30, 2<<30, 1<<20) != 8192 || KVTokens(1<<30, 2<<30, 1<<20) != 0 || KVTokens(1<<30, 0, 0) != 0 {
		t.Fatal("KVTokens")
	}
}

func TestNoDriver(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED} {
		f := gputest.NewDGX()
		f.InitFunc = func() nvml.Return { return ret }
		if _, err := Open(f, nil); !errors.Is(err, ErrNoDriver) {
			t.Fatalf("%v: got %v, want ErrNoDriver", ret, err)
		}
	}
	f := gputest.NewDGX()
	f.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.SUCCESS }
	if _, err := Open(f, nil); !errors.Is(err, ErrNoDriver) {
		t.Fatalf("no devices: %v", err)
	}
	f = gputest.NewDGX()
	f.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	if _, err := Open(f, nil); err == nil || errors.Is(err, ErrNoDriver) {
		t.Fatalf("a broken driver is not a missing one: %v", err)
	}
}

func TestUnsupportedReadings(t *testing.T) {
	f := gputest.NewDGX()
	d := f.Devices[0].(*dgxa100.Device)
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	f.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
	m, err := Open(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := m.Read()[0]
	if len(r.Unsupported) != 2 || !strings.HasPrefix(r.Unsupported[0], "power:") || r.PowerWatts != 0 || !r.Healthy() {
		t.Fatalf("%+v", r)
	}
}

func TestXidAndECCHealth(t *testing.T) {
	f := gputest.NewDGX()
	m, err := Open(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan error, 4)
	m.OnChange(func(err error) { changes <- err })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	// An application fault (Xid 13) is counted but leaves the device healthy.
	f.Events <- nvml.EventData{Device: f.Devices[2], EventType: nvml.EventTypeXidCriticalError, EventData: 13}
	waitFor(t, func() bool { return m.Read()[2].Xids[13] == 1 })
	if m.Healthy() != nil {
		t.Fatalf("Xid 13 made the device unhealthy: %v", m.Healthy())
	}
	// Xid 79 (fallen off the bus) does not.
	f.Events <- nvml.EventData{Device: f.Devices[5], EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	err = <-changes
	if err == nil || !strings.Contains(err.Error(), "gpu 5") || !strings.Contains(err.Error(), "critical Xid 79") {
		t.Fatalf("health after Xid 79: %v", err)
	}
	if r := m.Read()[5]; r.Healthy() || r.Xids[79] != 1 {
		t.Fatalf("%+v", r)
	}
	// Uncorrected ECC errors appearing on another device add to the problems.
	f.SetECC(1, 2)
	waitFor(t, func() bool { return !m.Read()[1].Healthy() })
	if err := m.Healthy(); !strings.Contains(err.Error(), "gpu 1") || !strings.Contains(err.Error(), "2 uncorrected ECC errors") {
		t.Fatalf("%v", err)
	}
}

func TestIgnoredXidsConfigurable(t *testing.T) {
	f := gputest.NewDGX()
	m, err := Open(f, []uint64{79})
	if err != nil {
		t.Fatal(err)
	}
	m.event(nvml.EventData{Device: f.Devices[0], EventType: nvml.EventTypeXidCriticalError, EventData: 79})
	m.event(nvml.EventData{Device: f.Devices[0], EventType: nvml.EventTypeXidCriticalError, EventData: 13})
	if err := m.Healthy(); err == nil || !strings.Contains(err.Error(), "Xid 13") {
		t.Fatalf("with only 79 ignored, Xid 13 is critical: %v", err)
	}
	m.event(nvml.EventData{Device: f.Devices[1], EventType: nvml.EventTypeDoubleBitEccError})
	if err := m.Healthy(); !strings.Contains(err.Error(), "gpu 1") || !strings.Contains(err.Error(), "double-bit ECC") {
		t.Fatalf("%v", err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

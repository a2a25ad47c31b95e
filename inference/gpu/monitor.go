package gpu

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ErrNoDriver: no NVIDIA driver (or no GPU) on this machine.
var ErrNoDriver = errors.New("gpu: no NVIDIA driver or device")

// DefaultIgnoredXids are Xids that an application's own fault causes (as
// the Kubernetes NVIDIA device plugin treats them): they do not make the
// device unhealthy.
var DefaultIgnoredXids = []uint64{13, 31, 43, 45, 68, 109}

// Reading is one device's state at one time. Fields a device does not
// support stay zero and are named in Unsupported.
type Reading struct {
	Index       int
	UUID        string
	Name        string
	MemoryTotal uint64
	MemoryUsed  uint64
	MemoryFree  uint64
	// Utilization and MemoryUtilization are fractions 0..1 of the last
	// sample period.
	Utilization       float64
	MemoryUtilization float64
	TemperatureC      uint32
	PowerWatts        float64
	// Throttle is NVML's clock event reasons bitmask; ThrottleReasons names
	// its bits.
	Throttle        uint64
	ThrottleReasons []string
	// ECCUncorrected counts uncorrected ECC errors since the driver loaded.
	ECCUncorrected uint64
	// Xids counts critical Xid events seen, by Xid.
	Xids map[uint64]uint64
	// Problem is why the device is unhealthy; empty when healthy.
	Problem     string
	Unsupported []string
}

// Healthy reports whether the device has no problem.
func (r Reading) Healthy() bool { return r.Problem == "" }

type device struct {
	h        nvml.Device
	index    int
	uuid     string
	name     string
	eccStart uint64
	eccOK    bool
	xids     map[uint64]uint64
	problem  string
}

// Monitor watches the devices NVML reports. Read and Healthy are safe for
// concurrent use; Run polls and waits for events.
type Monitor struct {
	lib     nvml.Interface
	ignored map[uint64]bool
	events  nvml.EventSet

	mu       sync.Mutex
	devices  []*device
	readings []Reading
	util     float64 // highest utilisation over the devices
	memUtil  float64 // highest used/total memory over the devices
	onChange func(error)
}

// Open initialises NVML and discovers the devices. ignoredXids may be nil
// for DefaultIgnoredXids.
func Open(lib nvml.Interface, ignoredXids []uint64) (*Monitor, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED || ret == nvml.ERROR_NO_PERMISSION {
			return nil, fmt.Errorf("%w: %v", ErrNoDriver, ret)
		}
		return nil, fmt.Errorf("gpu: nvml init: %v", ret)
	}
	m := &Monitor{lib: lib, ignored: map[uint64]bool{}}
	if ignoredXids == nil {
		ignoredXids = DefaultIgnoredXids
	}
	for _, x := range ignoredXids {
		m.ignored[x] = true
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("gpu: device count: %v", ret)
	}
	if n == 0 {
		lib.Shutdown()
		return nil, fmt.Errorf("%w: no devices", ErrNoDriver)
	}
	for i := 0; i < n; i++ {
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			lib.Shutdown()
			return nil, fmt.Errorf("gpu: device %d: handle: %v", i, ret)
		}
		d := &device{h: h, index: i, xids: map[uint64]uint64{}}
		d.uuid, _ = h.GetUUID()
		d.name, _ = h.GetName()
		d.eccStart, ret = h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
		d.eccOK = ret == nvml.SUCCESS
		m.devices = append(m.devices, d)
	}
	m.registerEvents()
	m.refresh()
	return m, nil
}

// registerEvents asks for Xid and double-bit ECC events on every device
// that supports them; without an event set, health rests on ECC counters.
func (m *Monitor) registerEvents() {
	set, ret := m.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return
	}
	registered := 0
	for _, d := range m.devices {
		supported, ret := d.h.GetSupportedEventTypes()
		if ret != nvml.SUCCESS {
			continue
		}
		want := uint64(nvml.EventTypeXidCriticalError|nvml.EventTypeDoubleBitEccError) & supported
		if want != 0 && d.h.RegisterEvents(want, set) == nvml.SUCCESS {
			registered++
		}
	}
	if registered == 0 {
		set.Free()
		return
	}
	m.events = set
}

// OnChange sets a function called (from Run) when health changes, with nil
// when all devices are healthy.
func (m *Monitor) OnChange(f func(error)) {
	m.mu.Lock()
	m.onChange = f
	m.mu.Unlock()
}

// Close releases NVML.
func (m *Monitor) Close() error {
	if m.events != nil {
		m.events.Free()
	}
	if ret := m.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("gpu: nvml shutdown: %v", ret)
	}
	return nil
}

// Run refreshes the readings every interval and handles device events
// until ctx ends.
func (m *Monitor) Run(ctx context.Context, interval time.Duration) error {
	next := time.Now().Add(interval)
	for ctx.Err() == nil {
		if m.events != nil {
			// Wait blocks in the driver for at most the time left.
			wait := max(time.Until(next), time.Millisecond)
			e, ret := m.events.Wait(uint32(min(wait, time.Second) / time.Millisecond))
			if ret == nvml.SUCCESS {
				m.event(e)
			}
		} else {
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(next)):
			}
		}
		if !time.Now().Before(next) {
			m.refresh()
			next = time.Now().Add(interval)
		}
	}
	return nil
}

// event records an Xid or ECC event against its device.
func (m *Monitor) event(e nvml.EventData) {
	m.mu.Lock()
	notify := func() {}
	defer func() {
		m.mu.Unlock()
		notify()
	}()
	var d *device
	for _, x := range m.devices {
		if x.h == e.Device {
			d = x
		}
	}
	if d == nil && len(m.devices) == 1 {
		d = m.devices[0]
	}
	if d == nil {
		return
	}
	before := m.healthLocked()
	switch {
	case e.EventType&nvml.EventTypeXidCriticalError != 0:
		d.xids[e.EventData]++
		if !m.ignored[e.EventData] && d.problem == "" {
			d.problem = fmt.Sprintf("critical Xid %d", e.EventData)
		}
	case e.EventType&nvml.EventTypeDoubleBitEccError != 0:
		if d.problem == "" {
			d.problem = "double-bit ECC error"
		}
	}
	if d.index < len(m.readings) { // show the event before the next refresh
		r := &m.readings[d.index]
		r.Problem = d.problem
		r.Xids = maps.Clone(d.xids)
	}
	notify = m.changeLocked(before)
}

// refresh reads every device and updates health from the ECC counters.
func (m *Monitor) refresh() {
	m.mu.Lock()
	notify := func() {}
	defer func() {
		m.mu.Unlock()
		notify()
	}()
	before := m.healthLocked()
	rs := make([]Reading, len(m.devices))
	for i, d := range m.devices {
		rs[i] = d.read()
		if d.eccOK && rs[i].ECCUncorrected > d.eccStart && d.problem == "" {
			d.problem = fmt.Sprintf("%d uncorrected ECC errors", rs[i].ECCUncorrected-d.eccStart)
		}
		rs[i].Problem = d.problem
	}
	m.readings = rs
	m.util, m.memUtil = 0, 0
	for _, r := range rs {
		m.util = max(m.util, r.Utilization)
		if r.MemoryTotal > 0 {
			m.memUtil = max(m.memUtil, float64(r.MemoryUsed)/float64(r.MemoryTotal))
		}
	}
	notify = m.changeLocked(before)
}

// Load is the highest compute and memory utilisation over the devices at
// the last refresh: what load reports need, without copying readings.
func (m *Monitor) Load() (util, memUtil float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.util, m.memUtil
}

// KVTokens is how many KV-cache tokens fit in free bytes after reserving
// some, at perToken bytes each.
func KVTokens(free, reserve, perToken uint64) int {
	if perToken == 0 || free <= reserve {
		return 0
	}
	return int((free - reserve) / perToken)
}

// changeLocked returns what to call, once the lock is released, if health
// changed since before: the callback may read the monitor.
func (m *Monitor) changeLocked(before error) func() {
	after, f := m.healthLocked(), m.onChange
	if (before == nil) == (after == nil) || f == nil {
		return func() {}
	}
	return func() { f(after) }
}

func (d *device) read() Reading {
	r := Reading{Index: d.index, UUID: d.uuid, Name: d.name, Xids: maps.Clone(d.xids)}
	unsupported := func(what string, ret nvml.Return) {
		r.Unsupported = append(r.Unsupported, what+": "+ret.Error())
	}
	if mem, ret := d.h.GetMemoryInfo(); ret == nvml.SUCCESS {
		r.MemoryTotal, r.MemoryUsed, r.MemoryFree = mem.Total, mem.Used, mem.Free
	} else {
		unsupported("memory", ret)
	}
	if u, ret := d.h.GetUtilizationRates(); ret == nvml.SUCCESS {
		r.Utilization, r.MemoryUtilization = float64(u.Gpu)/100, float64(u.Memory)/100
	} else {
		unsupported("utilization", ret)
	}
	if t, ret := d.h.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
		r.TemperatureC = t
	} else {
		unsupported("temperature", ret)
	}
	if p, ret := d.h.GetPowerUsage(); ret == nvml.SUCCESS {
		r.PowerWatts = float64(p) / 1000
	} else {
		unsupported("power", ret)
	}
	if th, ret := d.h.GetCurrentClocksEventReasons(); ret == nvml.SUCCESS {
		r.Throttle, r.ThrottleReasons = th, ThrottleReasons(th)
	} else {
		unsupported("clock event reasons", ret)
	}
	if n, ret := d.h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC); ret == nvml.SUCCESS {
		r.ECCUncorrected = n
	} else {
		unsupported("ecc", ret)
	}
	return r
}

// Read returns the latest readings, one per device.
func (m *Monitor) Read() []Reading {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Reading(nil), m.readings...)
}

// Healthy is nil when every device is healthy, else names the failures.
func (m *Monitor) Healthy() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.healthLocked()
}

func (m *Monitor) healthLocked() error {
	var bad []string
	for _, d := range m.devices {
		if d.problem != "" {
			bad = append(bad, fmt.Sprintf("gpu %d (%s): %s", d.index, d.uuid, d.problem))
		}
	}
	if bad == nil {
		return nil
	}
	return errors.New(strings.Join(bad, "; "))
}

// FreeMemory is the free memory summed over all devices.
func (m *Monitor) FreeMemory() uint64 {
	var free uint64
	for _, r := range m.Read() {
		free += r.MemoryFree
	}
	return free
}

var throttleNames = map[uint64]string{
	nvml.ClocksEventReasonGpuIdle:                   "gpu_idle",
	nvml.ClocksEventReasonApplicationsClocksSetting: "applications_clocks_setting",
	nvml.ClocksEventReasonSwPowerCap:                "sw_power_cap",
	nvml.ClocksThrottleReasonHwSlowdown:             "hw_slowdown",
	nvml.ClocksEventReasonSyncBoost:                 "sync_boost",
	nvml.ClocksEventReasonSwThermalSlowdown:         "sw_thermal_slowdown",
	nvml.ClocksThrottleReasonHwThermalSlowdown:      "hw_thermal_slowdown",
	nvml.ClocksThrottleReasonHwPowerBrakeSlowdown:   "hw_power_brake_slowdown",
	nvml.ClocksEventReasonDisplayClockSetting:       "display_clock_setting",
}

// ThrottleReasons names the bits of a clock event reasons mask, sorted.
func ThrottleReasons(mask uint64) []string {
	var out []string
	for bit, name := range throttleNames {
		if mask&bit != 0 {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

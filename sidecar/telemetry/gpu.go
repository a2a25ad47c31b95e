package telemetry

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-autoglm/autoglm/inference/gpu"
)

var (
	gpuLabels      = []string{"gpu", "uuid", "name"}
	gpuMemTotal    = prometheus.NewDesc("autoglm_gpu_memory_total_bytes", "Device memory.", gpuLabels, nil)
	gpuMemUsed     = prometheus.NewDesc("autoglm_gpu_memory_used_bytes", "Device memory in use.", gpuLabels, nil)
	gpuUtil        = prometheus.NewDesc("autoglm_gpu_utilization_ratio", "Fraction of the last sample period a kernel ran.", gpuLabels, nil)
	gpuMemUtil     = prometheus.NewDesc("autoglm_gpu_memory_bandwidth_utilization_ratio", "Fraction of the last sample period device memory was read or written.", gpuLabels, nil)
	gpuTemp        = prometheus.NewDesc("autoglm_gpu_temperature_celsius", "GPU temperature.", gpuLabels, nil)
	gpuPower       = prometheus.NewDesc("autoglm_gpu_power_watts", "Power draw.", gpuLabels, nil)
	gpuThrottle    = prometheus.NewDesc("autoglm_gpu_clock_throttle", "1 for each active clock event (throttle) reason.", append(gpuLabels, "reason"), nil)
	gpuECC         = prometheus.NewDesc("autoglm_gpu_ecc_uncorrected_errors_total", "Uncorrected ECC errors since the driver loaded.", gpuLabels, nil)
	gpuXid         = prometheus.NewDesc("autoglm_gpu_xid_errors_total", "Critical Xid events seen, by Xid.", append(gpuLabels, "xid"), nil)
	gpuHealthyDesc = prometheus.NewDesc("autoglm_gpu_healthy", "1 while the device has no Xid or ECC failure.", gpuLabels, nil)
)

// GPUCollector exports NVML readings at scrape time.
type GPUCollector struct {
	Read func() []gpu.Reading
}

func (c GPUCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gpuMemTotal, gpuMemUsed, gpuUtil, gpuMemUtil, gpuTemp, gpuPower, gpuThrottle, gpuECC, gpuXid, gpuHealthyDesc} {
		ch <- d
	}
}

func (c GPUCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.Read() {
		l := []string{strconv.Itoa(r.Index), r.UUID, r.Name}
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(l, extra...)...)
		}
		gauge(gpuMemTotal, float64(r.MemoryTotal))
		gauge(gpuMemUsed, float64(r.MemoryUsed))
		gauge(gpuUtil, r.Utilization)
		gauge(gpuMemUtil, r.MemoryUtilization)
		gauge(gpuTemp, float64(r.TemperatureC))
		gauge(gpuPower, r.PowerWatts)
		for _, reason := range r.ThrottleReasons {
			gauge(gpuThrottle, 1, reason)
		}
		ch <- prometheus.MustNewConstMetric(gpuECC, prometheus.CounterValue, float64(r.ECCUncorrected), l...)
		for xid, n := range r.Xids {
			ch <- prometheus.MustNewConstMetric(gpuXid, prometheus.CounterValue, float64(n), append(l, strconv.FormatUint(xid, 10))...)
		}
		healthy := 0.0
		if r.Healthy() {
			healthy = 1
		}
		gauge(gpuHealthyDesc, healthy)
	}
}

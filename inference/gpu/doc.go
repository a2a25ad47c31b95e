// Package gpu reads NVIDIA GPUs through NVML (github.com/NVIDIA/go-nvml,
// used only through nvml.Interface so tests run on go-nvml's mocks): device
// discovery, memory, utilisation, temperature, power, clock throttle
// reasons, ECC counters, and Xid events. It is the engines' view of the
// hardware: the sidecar exports its readings as metrics and ORCA named
// metrics, sizes the KV budget from free memory, and turns not-ready when a
// device fails. With no driver, Open returns ErrNoDriver and the sidecar runs
// on the CPU.
package gpu

// Package bench holds the sidecar's benchmarks recorded in BENCHMARKS.md:
// overhead against a bare handler, the batching gain of the scheduler, and
// behaviour under overload. Run them with `make bench`.
package bench

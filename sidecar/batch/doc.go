// Package batch is the sidecar's continuous-batching scheduler, between
// admission and the engine on the request path.
//
// One goroutine (Scheduler.Run) owns the engine. Before every step it drops
// sequences whose caller has gone, admits queued ones into free KV slots
// (iteration-level batching: new sequences join between decode steps), and
// splits the step's token budget between decoding sequences (one token each)
// and prompt chunks of the ones still in prefill. Generated text goes to
// each Sequence's buffer, which its reader drains at its own pace, so a slow
// client never stalls the batch.
package batch

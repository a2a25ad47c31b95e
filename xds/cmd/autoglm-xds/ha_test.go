package main

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/open-autoglm/autoglm/xds/config"
	k8s "github.com/open-autoglm/autoglm/xds/kube"
	"github.com/open-autoglm/autoglm/xds/rollout"
	"github.com/open-autoglm/autoglm/xds/server"
)

// healthy is a sample where both versions serve fast, error-free traffic.
func healthy() func(context.Context, string) (rollout.Sample, error) {
	var n atomic.Int64
	return func(_ context.Context, version string) (rollout.Sample, error) {
		c := float64(n.Add(50))
		return rollout.Sample{Ready: 1, Targets: map[string]rollout.Counters{version: {Requests: c,
			TTFT: map[float64]float64{0.05: c, 1e9: c}, TPOT: map[float64]float64{0.01: c, 1e9: c}}}}, nil
	}
}

type replica struct {
	s    *server.Server
	r    *runner
	stop context.CancelFunc
	done chan struct{}
}

// startReplica is one autoglm-xds replica of the shipped Deployment: its
// own server, the same plan, the same Lease and state ConfigMap.
func startReplica(t *testing.T, client *fake.Clientset, id string, plan rollout.Plan) *replica {
	t.Helper()
	s := server.New(slog.New(slog.DiscardHandler))
	c, err := config.Parse([]byte(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [g]}
models:
  - name: m
    versions:
      - {name: v1, weight: 100, endpoints: ["127.0.0.1:1"], grpc_port: 9090}
      - {name: v2, weight: 0, endpoints: ["127.0.0.1:2"], grpc_port: 9090}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(c); err != nil {
		t.Fatal(err)
	}
	r := &runner{s: s, plan: plan, log: slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("replica", id), sample: healthy(),
		state: &k8s.RolloutState{Client: client, Namespace: "autoglm", Name: "autoglm-rollout"},
		lease: &lease{client: client, namespace: "autoglm", name: "autoglm-xds-rollout", id: id,
			timing: k8s.LeaseTiming{LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}}}
	ctx, stop := context.WithCancel(context.Background())
	rep := &replica{s: s, r: r, stop: stop, done: make(chan struct{})}
	go func() { r.Run(ctx); close(rep.done) }()
	t.Cleanup(func() { stop(); <-rep.done })
	return rep
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestHighAvailability: two replicas, one Lease. Only the leader runs the
// plan; the follower serves the weights it saved; when the leader goes,
// the follower takes over and resumes the plan where it was (it does not
// start again at step 0); a replica started after the end serves the
// final weights and does not run the plan again.
func TestHighAvailability(t *testing.T) {
	client := fake.NewClientset()
	plan := rollout.Plan{Model: "m", Stable: "v1", Canary: "v2", Interval: 20 * time.Millisecond,
		Steps: []rollout.Step{{Weight: 10, Hold: 300 * time.Millisecond}, {Weight: 40, Hold: 1500 * time.Millisecond}, {Weight: 100, Hold: 300 * time.Millisecond}},
		SLO:   rollout.SLO{MaxErrorRate: 0.01, MaxTTFTRatio: 1.5, MinRequests: 10}}
	a, b := startReplica(t, client, "a", plan), startReplica(t, client, "b", plan)

	var leader, follower *replica
	eventually(t, "a leader at step 1", func() bool {
		for _, x := range [][2]*replica{{a, b}, {b, a}} {
			if rep := x[0].r.Report(); rep.Role == "leader" && rep.Step == 1 {
				leader, follower = x[0], x[1]
				return true
			}
		}
		return false
	})
	if rep := follower.r.Report(); rep.Role != "follower" {
		t.Fatalf("the other replica is %q", rep.Role)
	}
	eventually(t, "the follower serving the leader's 40 %", func() bool { return follower.s.Weights("m")["v2"] == 40 })

	leader.stop() // the leader goes (a rolling update): it releases the Lease
	<-leader.done
	eventually(t, "the follower leading", func() bool { return follower.r.Report().Role == "leader" })
	eventually(t, "promotion", func() bool { return follower.r.Report().State == rollout.Promoted })
	st := follower.r.Report()
	resumed := false
	for _, e := range st.History {
		resumed = resumed || strings.Contains(e.Message, "resumed: progressing at step 1 (40%)")
		if strings.Contains(e.Message, "step 0:") {
			t.Fatalf("the new leader started over: %+v", st.History)
		}
	}
	if !resumed {
		t.Fatalf("the new leader did not resume: %+v", st.History)
	}
	if w := follower.s.Weights("m"); w["v2"] != 100 || w["v1"] != 0 {
		t.Fatalf("served weights %v", w)
	}
	// The leader saves the final state just after it reports it.
	store := &k8s.RolloutState{Client: client, Namespace: "autoglm", Name: "autoglm-rollout"}
	eventually(t, "the promotion saved", func() bool {
		sv, ok, err := store.Load(context.Background(), "m")
		return err == nil && ok && sv.State == rollout.Promoted && sv.Weight == 100
	})

	late := startReplica(t, client, "c", plan) // e.g. a restarted pod
	eventually(t, "the late replica serving 100 %", func() bool { return late.s.Weights("m")["v2"] == 100 })
	if rep := late.r.Report(); rep.Role != "follower" || rep.State != rollout.Promoted {
		t.Fatalf("late replica: %+v", rep)
	}
	follower.stop()
	<-follower.done
	eventually(t, "the late replica leading", func() bool { return late.r.Report().Role == "leader" })
	eventually(t, "the late replica's controller", func() bool { return late.r.Report().State == rollout.Promoted })
	for _, e := range late.r.Report().History {
		if strings.Contains(e.Message, "step ") && !strings.Contains(e.Message, "resumed") {
			t.Fatalf("a finished plan ran again: %+v", late.r.Report().History)
		}
	}
}

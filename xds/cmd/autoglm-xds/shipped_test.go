package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/sidecartest"
	"github.com/open-autoglm/autoglm/internal/xdstest"
	sidecarcfg "github.com/open-autoglm/autoglm/sidecar/config"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	"github.com/open-autoglm/autoglm/xds/config"
	k8s "github.com/open-autoglm/autoglm/xds/kube"
	"github.com/open-autoglm/autoglm/xds/rollout"
	"github.com/open-autoglm/autoglm/xds/server"
)

// loopback24 is a random /24 of 127/8 for one test's sidecars: they must
// listen on the shipped Services' ports (8080, 9090), so a fixed address
// would collide with another run of the tests on the same machine.
func loopback24() string { return fmt.Sprintf("127.%d.%d", 64+rand.IntN(128), rand.IntN(256)) }

// sidecarAt runs a real sidecar on ip at the ports the shipped
// configuration names (8080 HTTP, 9090 gRPC).
func sidecarAt(t *testing.T, ip string, eng testengine.Config) {
	t.Helper()
	hl, err := net.Listen("tcp", ip+":8080")
	if err != nil {
		t.Fatalf("listen %s:8080: %v", ip, err)
	}
	gl, err := net.Listen("tcp", ip+":9090")
	if err != nil {
		t.Fatalf("listen %s:9090: %v", ip, err)
	}
	cfg := sidecarcfg.Default()
	cfg.Admission.MaxQueue = 1024
	sidecartest.Start(t, cfg, testengine.New(eng), hl, gl)
}

func endpointSlice(service, ip string, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: service + "-abcde", Namespace: "autoglm", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
}

// shippedRollout runs a plan over the configuration manifests/ ships
// (versions as Services, discovered from EndpointSlices through client-go)
// with real sidecars behind the Services' addresses and proxyless gRPC
// clients sending traffic through autoglm-xds. during runs while the
// rollout does, with the fake cluster's client.
func shippedRollout(t *testing.T, net24 string, canary testengine.Config, during func(*fake.Clientset)) rollout.Status {
	stableIP, canaryIP := net24+".1", net24+".2"
	stable := testengine.Config{Model: "autoglm-tiny", StepCost: 6 * time.Millisecond, TokenCost: 100 * time.Microsecond}
	sidecarAt(t, stableIP, stable)
	canary.Model = "autoglm-tiny"
	sidecarAt(t, canaryIP, canary)
	client := fake.NewClientset(endpointSlice("autoglm-model-v1", stableIP, true), endpointSlice("autoglm-model-v2", canaryIP, true))

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	watcher := k8s.New(client)
	go watcher.Run(ctx)
	if !watcher.WaitForSync(ctx) {
		t.Fatal("EndpointSlices did not sync")
	}
	s := server.New(slog.New(slog.DiscardHandler))
	s.SetDiscovery(watcher.Discovered)
	shipped, err := config.Load("../../../manifests/base/files/xds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish(shipped); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-watcher.Changed():
				s.Republish()
			}
		}
	}()
	api := autoglmv1.NewInferenceClient(xdstest.Client(t, xdstest.Run(t, s), "autoglm-inference", "load"))
	for range 6 {
		go func() {
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-autoglm-model", "autoglm-tiny"), 5*time.Second)
				if st, err := api.Generate(cctx, &autoglmv1.GenerateRequest{Model: "autoglm-tiny", Prompt: strings.Repeat("0123456789", 4), MaxTokens: 8}); err == nil {
					for {
						if _, err := st.Recv(); err != nil {
							break
						}
					}
				}
				cancel()
			}
		}()
	}

	plan, err := loadPlanText(`model: autoglm-tiny
stable: v1
canary: v2
interval: 200ms
steps: [{weight: 50, hold: 3s}, {weight: 100, hold: 500ms}]
slo: {max_error_rate: 0.01, max_ttft_ratio: 1.5, max_tpot_ratio: 1.2, min_requests: 100}
`)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := (&runner{s: s, plan: plan, log: slog.New(slog.DiscardHandler)}).controller()
	if err != nil {
		t.Fatal(err)
	}
	if during != nil {
		go during(client)
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := ro.Run(rctx); err != nil {
		t.Fatal(err)
	}
	st := ro.Status()
	t.Logf("%s: %s (%s)", st.State, st.Reason, st.Source)
	return st
}

// TestShippedConfigRollsBackSlowCanary: the canary behind Service
// autoglm-model-v2 is 2.6× slower to the first token; its metrics are
// read from the endpoints discovered for it, and it is rolled back.
func TestShippedConfigRollsBackSlowCanary(t *testing.T) {
	st := shippedRollout(t, loopback24(), testengine.Config{StepCost: 6 * time.Millisecond, TokenCost: 500 * time.Microsecond}, nil)
	if st.State != rollout.RolledBack || st.Weight != 0 || !strings.Contains(st.Reason, "time to first token") {
		t.Fatalf("%+v", st)
	}
	if !strings.Contains(st.Source, "service autoglm/autoglm-model-v2") {
		t.Fatalf("source %q", st.Source)
	}
}

// TestShippedConfigRollsBackUnreadyCanary: the canary's pod turns unready
// mid-rollout (its EndpointSlice says so); it is rolled back.
func TestShippedConfigRollsBackUnreadyCanary(t *testing.T) {
	net24 := loopback24()
	st := shippedRollout(t, net24, testengine.Config{StepCost: 6 * time.Millisecond, TokenCost: 100 * time.Microsecond}, func(c *fake.Clientset) {
		time.Sleep(time.Second)
		c.DiscoveryV1().EndpointSlices("autoglm").Update(context.Background(), endpointSlice("autoglm-model-v2", net24+".2", false), metav1.UpdateOptions{})
	})
	if st.State != rollout.RolledBack || st.Weight != 0 || !strings.Contains(st.Reason, "0 ready endpoints") {
		t.Fatalf("%+v", st)
	}
}

// TestShippedConfigPromotesHealthyCanary: the same engine behind both.
func TestShippedConfigPromotesHealthyCanary(t *testing.T) {
	st := shippedRollout(t, loopback24(), testengine.Config{StepCost: 6 * time.Millisecond, TokenCost: 100 * time.Microsecond}, nil)
	if st.State != rollout.Promoted || st.Weight != 100 {
		t.Fatalf("%+v", st)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/internal/spiffetest"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
)

// TestSidecarSPIFFE: the sidecar binary serves HTTP and gRPC over mTLS
// with the SVID a (fake, but real gRPC) Workload API gives it; the allowed
// caller gets answers, another SPIFFE ID of the same trust domain gets 403
// and PERMISSION_DENIED (counted), a caller without a certificate does not
// get past the handshake; SVID rotation under continuous load, without a
// restart, loses no request and new connections see the new certificate.
func TestSidecarSPIFFE(t *testing.T) {
	ca := spiffetest.NewCA(t, "example.org")
	api := spiffetest.StartWorkloadAPI(t, ca, ca.Issue(t, "spiffe://example.org/ns/models/sa/sidecar", time.Hour))
	allowed := ca.Issue(t, "spiffe://example.org/ns/apps/sa/allowed", time.Hour)
	other := ca.Issue(t, "spiffe://example.org/ns/apps/sa/other", time.Hour)

	sidecar := build(t)
	httpAddr, grpcAddr := freePort(t), freePort(t)
	sc := startSidecar(t, sidecar, fmt.Sprintf("server:\n  http_addr: %s\n  grpc_addr: %s\nengine:\n  kind: test\n  test:\n    step_cost: 1ms\n"+
		"identity:\n  mode: spiffe\n  workload_socket: %s\n  allow: [%s]\n", httpAddr, grpcAddr, api.Addr, allowed.ID))
	base := "https://" + httpAddr
	client := mtlsClient
	good := client(ca.ClientTLS(allowed), true)
	waitReadyMTLS(t, good, base, sc)
	chat := func(c *http.Client) (*http.Response, string, error) { return chatOver(c, base) }
	if resp, body, err := chat(good); err != nil || resp.StatusCode != 200 {
		t.Fatalf("allowed caller: %v %v %s", resp, err, body)
	}
	resp, body, err := chat(client(ca.ClientTLS(other), true))
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("other caller: %v %v %s", resp, err, body)
	}
	var e struct {
		Error struct{ Type, Code, Message string }
	}
	if json.Unmarshal([]byte(body), &e) != nil || e.Error.Type != "permission_error" || !strings.Contains(e.Error.Message, other.ID) {
		t.Fatalf("403 body %s", body)
	}
	noCert := ca.ClientTLS(allowed)
	noCert.Certificates = nil
	if _, _, err := chat(client(noCert, false)); err == nil {
		t.Fatal("a caller without a certificate got an answer")
	}

	// gRPC with the same identities.
	call := func(s spiffetest.SVID) error {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLS(s))))
		if err != nil {
			return err
		}
		defer conn.Close()
		stream, err := autoglmv1.NewInferenceClient(conn).Generate(context.Background(), &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "hi", MaxTokens: 2})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	if err := call(allowed); err != nil {
		t.Fatalf("gRPC allowed: %v", err)
	}
	if err := call(other); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC other: %v", err)
	}
	resp, err = good.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`autoglm_unauthorized_requests_total{api="http",reason="forbidden"} 1`, `autoglm_unauthorized_requests_total{api="grpc",reason="forbidden"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Fatalf("metrics lack %s", want)
		}
	}

	// Rotation under load: 8 clients, half of them on new connections per
	// request, while the server's SVID is replaced three times.
	ok, failed, serials := loadMTLS(t, ca.ClientTLS(allowed), base, 8, func() {
		for range 3 {
			time.Sleep(300 * time.Millisecond)
			api.Rotate(ca.Issue(t, "spiffe://example.org/ns/models/sa/sidecar", time.Hour))
		}
		time.Sleep(300 * time.Millisecond)
	})
	if failed != 0 || ok < 20 {
		t.Fatalf("rotation: %d ok, %d failed", ok, failed)
	}
	if len(serials) < 3 {
		t.Fatalf("clients saw %d server certificates over 3 rotations, want the new ones too", len(serials))
	}

	// A second sidecar in front runs this one as its remote engine, over
	// mTLS with its own SVID (the allowed ID), requiring the upstream's ID.
	frontAPI := spiffetest.StartWorkloadAPI(t, ca, ca.Issue(t, allowed.ID, time.Hour))
	front := func(serverID string) string {
		h, g := freePort(t), freePort(t)
		p := startSidecar(t, sidecar, fmt.Sprintf("server:\n  http_addr: %s\n  grpc_addr: %s\nengine:\n  kind: remote\n  model: autoglm-test\n"+
			"  remote:\n    url: %s\n    concurrency: 4\n    server_id: %s\nidentity:\n  workload_socket: %s\n", h, g, base, serverID, frontAPI.Addr))
		p.base = "http://" + h
		return p.base
	}
	f := front("spiffe://example.org/ns/models/sa/sidecar")
	for deadline := time.Now().Add(30 * time.Second); readyz(f) != 200; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("front sidecar not ready")
		}
	}
	resp, err = http.Post(f+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"autoglm-test","messages":[{"role":"user","content":"hi"}],"max_tokens":4}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("through the mTLS hop: %v %v", resp, err)
	}
	resp.Body.Close()
	// Expecting another upstream identity: the hop is refused, never ready.
	wrong := front("spiffe://example.org/ns/models/sa/impostor")
	time.Sleep(2 * time.Second)
	if code := readyz(wrong); code == 200 {
		t.Fatal("a sidecar whose upstream has the wrong SPIFFE ID became ready")
	}
}

package e2e

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/internal/spiffetest"
)

// TestSVIDExpiryWithoutRotation: a drill. The sidecar's SVID expires and
// the Workload API does not rotate it (SPIRE agent down): callers' new
// connections are refused at the handshake — no request is answered with
// an expired identity — and the sidecar counts the refused handshakes;
// once the Workload API hands out a fresh SVID, new connections succeed
// again without a restart.
func TestSVIDExpiryWithoutRotation(t *testing.T) {
	ca := spiffetest.NewCA(t, "example.org")
	api := spiffetest.StartWorkloadAPI(t, ca, ca.Issue(t, "spiffe://example.org/ns/models/sa/sidecar", time.Hour))
	allowed := ca.Issue(t, "spiffe://example.org/ns/apps/sa/allowed", time.Hour)
	sidecar := build(t)
	httpAddr, grpcAddr := freePort(t), freePort(t)
	sc := startSidecar(t, sidecar, fmt.Sprintf("server:\n  http_addr: %s\n  grpc_addr: %s\nengine:\n  kind: test\n"+
		"identity:\n  mode: spiffe\n  workload_socket: %s\n  allow: [%s]\n", httpAddr, grpcAddr, api.Addr, allowed.ID))
	base := "https://" + httpAddr
	fresh := func() error { // a new connection per request
		resp, body, err := chatOver(mtlsClient(ca.ClientTLS(allowed), false), base)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return err
	}
	waitReadyMTLS(t, mtlsClient(ca.ClientTLS(allowed), true), base, sc)
	// The last SVID the Workload API hands out lives 3 s.
	short := ca.Issue(t, "spiffe://example.org/ns/models/sa/sidecar", 3*time.Second)
	api.Rotate(short)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, _, err := chatOver(mtlsClient(ca.ClientTLS(allowed), false), base)
		if err == nil && resp.TLS.PeerCertificates[0].SerialNumber.Cmp(short.Cert.SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sidecar did not take the short-lived SVID: %v", err)
		}
	}
	time.Sleep(time.Until(short.Cert.NotAfter) + 500*time.Millisecond)
	refused := 0
	for range 5 {
		err := fresh()
		if err == nil {
			t.Fatal("a request was answered with an expired SVID")
		}
		if !strings.Contains(err.Error(), "certificate has expired") {
			t.Fatalf("after expiry: %v, want the handshake refused for the expired certificate", err)
		}
		refused++
	}
	api.Rotate(ca.Issue(t, "spiffe://example.org/ns/models/sa/sidecar", time.Hour))
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err = fresh(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after rotation: %v", err)
		}
	}
	resp, err := mtlsClient(ca.ClientTLS(allowed), false).Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var counted int
	for _, l := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(l, "autoglm_tls_handshake_errors_total ") {
			fmt.Sscan(strings.TrimPrefix(l, "autoglm_tls_handshake_errors_total "), &counted)
		}
	}
	if counted < refused {
		t.Fatalf("the sidecar counted %d refused handshakes, the clients saw %d", counted, refused)
	}
	t.Logf("%d handshakes refused while expired, %d counted; recovered after rotation", refused, counted)
}

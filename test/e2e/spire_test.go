package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/internal/toolcache"
)

// spireBin is where make test's spire target caches the SPIRE binaries.
func spireBin(t *testing.T) string {
	return toolcache.Require(t, "spire", "spire-1.15.3/bin", "spire-server", "spire-agent")
}

type spire struct {
	t                     *testing.T
	bin, dir              string
	serverSock, agentSock string
}

func (s *spire) serverCmd(args ...string) string {
	s.t.Helper()
	out, err := exec.Command(filepath.Join(s.bin, "spire-server"), append(args, "-socketPath", s.serverSock)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("spire-server %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// startSPIRE runs a SPIRE server and agent on loopback: join-token node
// attestation, unix workload attestation, the entries created before the
// agent starts (as SPIRE's docs advise, so the first SVIDs come at once).
func startSPIRE(t *testing.T, entries func(*spire) []spireEntry) *spire {
	bin := spireBin(t)
	dir, err := os.MkdirTemp("", "autoglm-spire-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755) // workloads of other uids reach the agent's socket
	s := &spire{t: t, bin: bin, dir: dir, serverSock: filepath.Join(dir, "server.sock"), agentSock: filepath.Join(dir, "agent.sock")}
	port := strings.TrimPrefix(freePort(t), "127.0.0.1:")
	serverConf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%s"
  socket_path = "%s"
  trust_domain = "example.org"
  data_dir = "%s/server-data"
  log_level = "WARN"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "%s/datastore.sqlite3"
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, port, s.serverSock, dir, dir)
	os.WriteFile(filepath.Join(dir, "server.conf"), []byte(serverConf), 0o644)
	start := func(name string, args ...string) {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s:\n%s", name, logs.String())
			}
		})
	}
	start("spire-server", "run", "-config", filepath.Join(dir, "server.conf"))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if exec.Command(filepath.Join(bin, "spire-server"), "healthcheck", "-socketPath", s.serverSock).Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("spire-server not healthy")
		}
	}
	token := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(s.serverCmd("token", "generate", "-spiffeID", "spiffe://example.org/agent"))
	if token == nil {
		t.Fatal("no join token")
	}
	for _, e := range entries(s) {
		s.serverCmd("entry", "create", "-parentID", "spiffe://example.org/agent", "-spiffeID", "spiffe://example.org"+e.path,
			"-selector", e.selector(), "-x509SVIDTTL", fmt.Sprint(int(e.ttl.Seconds())))
	}
	agentConf := fmt.Sprintf(`agent {
  data_dir = "%s/agent-data"
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "%s"
  socket_path = "%s"
  trust_domain = "example.org"
  insecure_bootstrap = true
  join_token = "%s"
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {
      discover_workload_path = %v
    }
  }
}
`, dir, port, s.agentSock, token[1], !asRoot)
	os.WriteFile(filepath.Join(dir, "agent.conf"), []byte(agentConf), 0o644)
	start("spire-agent", "run", "-config", filepath.Join(dir, "agent.conf"))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if exec.Command(filepath.Join(bin, "spire-agent"), "healthcheck", "-socketPath", s.agentSock).Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("spire-agent not healthy")
		}
	}
	return s
}

// spireEntry is a registration entry. Workloads are told apart by unix
// uid when the test runs as root (other uids through setpriv), else by the
// path of their binary (the unix attestor's discover_workload_path).
type spireEntry struct {
	path string
	uid  int
	bin  string // the workload's binary, for path selectors
	ttl  time.Duration
}

var asRoot = os.Getuid() == 0

func (e spireEntry) selector() string {
	if asRoot {
		return fmt.Sprintf("unix:uid:%d", e.uid)
	}
	return "unix:path:" + e.bin
}

// clientEntry is a client workload: spire-agent's "api fetch", run as
// uid (root) or from its own copy of the binary (path selectors).
func (s *spire) clientEntry(name string, uid int) spireEntry {
	s.t.Helper()
	bin := filepath.Join(s.dir, name, "spire-agent")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	data, err := os.ReadFile(filepath.Join(s.bin, "spire-agent"))
	if err != nil || os.WriteFile(bin, data, 0o755) != nil {
		s.t.Fatalf("copying spire-agent: %v", err)
	}
	return spireEntry{path: "/ns/apps/sa/" + name, uid: uid, bin: bin, ttl: time.Hour}
}

// fetchAs fetches the X.509 SVID of workload e, as that workload, and
// returns a TLS client configuration presenting it and trusting the
// bundle.
func (s *spire) fetchAs(e spireEntry) (*tls.Config, string) {
	s.t.Helper()
	uid := e.uid
	out := filepath.Join(s.dir, fmt.Sprintf("svid-%d", uid))
	os.MkdirAll(out, 0o777)
	os.Chmod(out, 0o777)
	var err error
	var b []byte
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		args := []string{"api", "fetch", "x509", "-socketPath", s.agentSock, "-write", out}
		cmd := exec.Command(e.bin, args...)
		if asRoot {
			cmd = exec.Command("setpriv", append([]string{fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", e.bin}, args...)...)
		}
		if b, err = cmd.CombinedOutput(); err == nil {
			break
		}
	}
	if err != nil {
		s.t.Fatalf("fetch as uid %d: %v\n%s", uid, err, b)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(out, "svid.0.pem"), filepath.Join(out, "svid.0.key"))
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	bundle, _ := os.ReadFile(filepath.Join(out, "bundle.0.pem"))
	pool.AppendCertsFromPEM(bundle)
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	id := ""
	if leaf != nil && len(leaf.URIs) > 0 {
		id = leaf.URIs[0].String()
	}
	return &tls.Config{
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // SPIFFE: the chain is verified below, the name is the URI SAN
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			if len(c.URIs) == 0 || c.URIs[0].String() != "spiffe://example.org/ns/models/sa/sidecar" {
				return fmt.Errorf("unexpected server identity %v", c.URIs)
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}, id
}

// TestSPIRE: the sidecar binary gets its SVID from a real SPIRE agent
// (workload attested by uid), serves mTLS; a workload of another uid with
// an allowed ID is answered, one with another ID gets 403 (counted); the
// sidecar's short-lived SVID rotates under continuous load without a lost
// request.
func TestSPIRE(t *testing.T) {
	sidecar := build(t)
	var caller, intruder spireEntry
	s := startSPIRE(t, func(s *spire) []spireEntry {
		caller, intruder = s.clientEntry("client", 65534), s.clientEntry("intruder", 65533)
		return []spireEntry{
			// the sidecar: this test's uid, a 20-second SVID rotating every ~10 s
			{path: "/ns/models/sa/sidecar", uid: os.Getuid(), bin: sidecar, ttl: 20 * time.Second},
			caller, intruder,
		}
	})
	httpAddr, grpcAddr := freePort(t), freePort(t)
	sc := startSidecar(t, sidecar, fmt.Sprintf("server:\n  http_addr: %s\n  grpc_addr: %s\nengine:\n  kind: test\n  test:\n    step_cost: 1ms\n"+
		"identity:\n  mode: spiffe\n  workload_socket: unix://%s\n  allow: [spiffe://example.org/ns/apps/sa/client]\n", httpAddr, grpcAddr, s.agentSock))
	clientTLS, clientID := s.fetchAs(caller)
	intruderTLS, intruderID := s.fetchAs(intruder)
	if clientID != "spiffe://example.org/ns/apps/sa/client" || intruderID != "spiffe://example.org/ns/apps/sa/intruder" {
		t.Fatalf("SVIDs %s %s", clientID, intruderID)
	}
	base := "https://" + httpAddr
	client := mtlsClient
	good := client(clientTLS, true)
	waitReadyMTLS(t, good, base, sc)
	chat := func(c *http.Client) (*http.Response, string, error) { return chatOver(c, base) }
	if resp, body, err := chat(good); err != nil || resp.StatusCode != 200 {
		t.Fatalf("allowed workload: %v %v %s", resp, err, body)
	}
	if resp, body, err := chat(client(intruderTLS, false)); err != nil || resp.StatusCode != 403 {
		t.Fatalf("other workload: %v %v %s", resp, err, body)
	}
	first := ""
	if resp, _, err := chat(client(clientTLS, false)); err == nil {
		first = resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	// Continuous load across at least one rotation of the sidecar's
	// 20-second SVID (the agent renews at half its lifetime).
	ok, failed, serials := loadMTLS(t, clientTLS, base, 4, func() { time.Sleep(14 * time.Second) })
	serials[first] = true
	if failed != 0 || ok < 50 {
		t.Fatalf("under rotation: %d ok, %d failed", ok, failed)
	}
	if len(serials) < 2 {
		t.Fatalf("the sidecar's SVID did not rotate in 14 s (serials %v)", serials)
	}
	resp, err := good.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `autoglm_unauthorized_requests_total{api="http",reason="forbidden"} 1`) {
		t.Fatal("the refusal is not counted")
	}
}

// Package redistest starts a real redis-server for tests (make test
// installs it with apt when it is missing).
package redistest

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Start runs redis-server on a free loopback port with no persistence and
// returns its address; it stops with the test.
func Start(t testing.TB) string { return StartServer(t).Addr }

// Server is a running redis-server that a drill can stop and start again
// at the same address.
type Server struct {
	Addr string
	t    testing.TB
	bin  string
	port int
	cmd  *exec.Cmd
}

// StartServer is Start with control over the process.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), t: t, bin: bin, port: port}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the server (its data is gone: there is no persistence).
func (s *Server) Stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart starts the server again at its address, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no")
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", s.Addr); err == nil {
			c.Close()
			return
		}
	}
	s.t.Fatalf("redis-server did not listen on %s", s.Addr)
}

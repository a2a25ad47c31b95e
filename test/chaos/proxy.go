// Package chaos holds drills run against real components: sidecars, the
// control plane and grpc-go's xDS client, with faults injected between
// them. This file is a loopback TCP proxy that can add latency to, or
// black-hole, the connections through it.
package chaos

import (
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections from its address to target.
type Proxy struct {
	l      net.Listener
	target string

	mu        sync.Mutex
	delay     time.Duration
	blackhole bool
	conns     []net.Conn
	wake      chan struct{} // closed when the black hole ends
}

// NewProxy listens on addr (e.g. 127.0.0.2:0) and forwards to target.
func NewProxy(addr, target string) (*Proxy, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{l: l, target: target, wake: make(chan struct{})}
	go p.serve()
	return p, nil
}

// Addr is where clients connect.
func (p *Proxy) Addr() *net.TCPAddr { return p.l.Addr().(*net.TCPAddr) }

// Close stops the proxy and its connections.
func (p *Proxy) Close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// Delay holds every chunk of data, both ways, for d (0: none).
func (p *Proxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Blackhole stops forwarding anything, on open connections and new ones,
// without closing them — a peer that vanished from the network — until
// it is called with false.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blackhole && !on {
		close(p.wake)
		p.wake = make(chan struct{})
	}
	p.blackhole = on
}

func (p *Proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *Proxy) handle(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, u)
	p.mu.Unlock()
	go p.pipe(u, c)
	p.pipe(c, u)
}

// pipe copies from src to dst, chunk by chunk, under the current faults.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				p.mu.Lock()
				hole, wake, d := p.blackhole, p.wake, p.delay
				p.mu.Unlock()
				if !hole {
					if d > 0 {
						time.Sleep(d)
					}
					break
				}
				<-wake
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

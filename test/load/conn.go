package load

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// conns is a minimal HTTP/1.1 client for plain-text targets: keep-alive
// connections written and read by the calling goroutine. net/http's
// transport runs two goroutines per connection and hands every request
// and response between them and the caller; at 10k requests/s on two
// cores that hand-off, not the network, limited the generator (see
// BENCHMARKS.md). Responses are parsed by net/http (http.ReadResponse).
type conns struct {
	addr, host string
	dialer     net.Dialer
	mu         sync.Mutex
	idle       []*pconn
}

type pconn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func newConns(host string) *conns {
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		addr = net.JoinHostPort(host, "80")
	}
	return &conns{addr: addr, host: host, dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}}
}

func (cs *conns) get(ctx context.Context) (*pconn, bool, error) {
	cs.mu.Lock()
	if n := len(cs.idle); n > 0 {
		p := cs.idle[n-1]
		cs.idle = cs.idle[:n-1]
		cs.mu.Unlock()
		return p, true, nil
	}
	cs.mu.Unlock()
	c, err := cs.dialer.DialContext(ctx, "tcp", cs.addr)
	if err != nil {
		return nil, false, err
	}
	return &pconn{c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 8<<10)}, false, nil
}

func (cs *conns) put(p *pconn) {
	cs.mu.Lock()
	cs.idle = append(cs.idle, p)
	cs.mu.Unlock()
}

// post sends a POST and returns the response, whose body must be read to
// the end or closed. A stale keep-alive connection (closed by the server
// while idle) is retried once on a new one.
func (cs *conns) post(ctx context.Context, path string, header http.Header, body []byte) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		p, reused, err := cs.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := cs.roundTrip(ctx, p, path, header, body)
		if err == nil {
			return resp, nil
		}
		p.c.Close()
		if !reused || attempt > 0 || ctx.Err() != nil || !errors.Is(err, errStale) {
			return nil, err
		}
	}
}

var errStale = errors.New("connection closed before the response")

func (cs *conns) roundTrip(ctx context.Context, p *pconn, path string, header http.Header, body []byte) (*http.Response, error) {
	// The context's end unblocks the connection's reads and writes.
	stop := context.AfterFunc(ctx, func() { p.c.SetDeadline(time.Unix(1, 0)) })
	w := p.bw
	w.WriteString("POST ")
	w.WriteString(path)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(cs.host)
	w.WriteString("\r\nContent-Type: application/json\r\nAccept: */*\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n")
	header.Write(w)
	w.WriteString("\r\n")
	w.Write(body)
	if err := w.Flush(); err != nil {
		stop()
		return nil, errStale
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		stop()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errStale
		}
		return nil, err
	}
	resp.Body = &pooledBody{ReadCloser: resp.Body, p: p, cs: cs, stop: stop, keep: !resp.Close}
	return resp, nil
}

// pooledBody returns its connection to the pool once read to the end.
type pooledBody struct {
	io.ReadCloser
	p    *pconn
	cs   *conns
	stop func() bool
	keep bool
	done bool
}

func (b *pooledBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if err == io.EOF && !b.done {
		b.done = true
		if b.stop() && b.keep { // the context did not fire: the connection is sound
			b.cs.put(b.p)
		} else {
			b.p.c.Close()
		}
	}
	return n, err
}

func (b *pooledBody) Close() error {
	if !b.done {
		b.done = true
		b.stop()
		b.p.c.Close() // not read to the end: the connection's state is unknown
	}
	return nil
}

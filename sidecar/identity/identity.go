// Package identity says who is calling the sidecar and whether they may:
// the caller's SPIFFE ID from its X.509 SVID (mTLS with SVIDs from the
// SPIFFE Workload API), or — behind the co-located Envoy, which terminates
// mTLS in Istio mode — from x-forwarded-client-cert, trusted only from a
// loopback peer. The verified ID is the request's tenant.
package identity

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/open-autoglm/autoglm/xfcc"
)

// Errors: no identity, or one that is not allowed.
var (
	ErrUnauthenticated = errors.New("the caller has no verified SPIFFE identity")
	ErrForbidden       = errors.New("the caller's SPIFFE ID may not use this model")
)

// Policy decides who may call.
type Policy struct {
	// Mode: "spiffe" (the peer's X.509 SVID on this connection), "xfcc"
	// (the URI of x-forwarded-client-cert, from a loopback peer only), or
	// "" (no verification: the x-autoglm-tenant header is the tenant).
	Mode string
	// TrustDomain admits any member when Allow has no entry for the model.
	TrustDomain spiffeid.TrustDomain
	// Allow lists the IDs that may call, per model ("*": any model).
	Allow map[string][]spiffeid.ID
	// Denied counts refusals by reason (may be nil).
	Denied *prometheus.CounterVec
}

// NewDenied makes the refusal counter, registered on reg.
func NewDenied(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autoglm_unauthorized_requests_total",
		Help: "Requests refused by caller identity, by reason (unauthenticated, forbidden) and API.",
	}, []string{"reason", "api"})
	if reg != nil {
		reg.MustRegister(c)
	}
	return c
}

// Enabled reports whether callers are verified.
func (p *Policy) Enabled() bool { return p != nil && p.Mode != "" }

// Authorize checks a verified ID against the policy for model.
func (p *Policy) Authorize(id spiffeid.ID, model string) error {
	list, ok := p.Allow[model]
	if !ok {
		list, ok = p.Allow["*"]
	}
	if ok {
		for _, a := range list {
			if a == id {
				return nil
			}
		}
		return fmt.Errorf("%w: %s", ErrForbidden, id)
	}
	if !p.TrustDomain.IsZero() && id.MemberOf(p.TrustDomain) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrForbidden, id)
}

func (p *Policy) count(err error, api string) {
	if p.Denied == nil {
		return
	}
	reason := "forbidden"
	if errors.Is(err, ErrUnauthenticated) {
		reason = "unauthenticated"
	}
	p.Denied.WithLabelValues(reason, api).Inc()
}

// HTTP returns the verified caller of r, allowed to use model.
func (p *Policy) HTTP(r *http.Request, model string) (spiffeid.ID, error) {
	id, err := p.httpPeer(r)
	if err == nil {
		err = p.Authorize(id, model)
	}
	if err != nil {
		p.count(err, "http")
	}
	return id, err
}

func (p *Policy) httpPeer(r *http.Request) (spiffeid.ID, error) {
	switch p.Mode {
	case "spiffe":
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return spiffeid.ID{}, ErrUnauthenticated
		}
		id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
		}
		return id, nil
	case "xfcc":
		if !loopback(r.RemoteAddr) {
			return spiffeid.ID{}, fmt.Errorf("%w: x-forwarded-client-cert is trusted only from the co-located proxy", ErrUnauthenticated)
		}
		// One header line: Envoy keeps x-forwarded-client-cert as one
		// value; two lines are not what the proxy sent.
		vs := r.Header.Values("X-Forwarded-Client-Cert")
		if len(vs) != 1 {
			return spiffeid.ID{}, fmt.Errorf("%w: want one x-forwarded-client-cert, got %d", ErrUnauthenticated, len(vs))
		}
		return xfccID(vs[0])
	}
	return spiffeid.ID{}, ErrUnauthenticated
}

// GRPC returns the verified caller of a gRPC call (mTLS mode), allowed
// to use model; xfcc is the call's x-forwarded-client-cert metadata and
// peerAddr its peer address (xfcc mode).
func (p *Policy) GRPC(ctx context.Context, model, xfccValue, peerAddr string) (spiffeid.ID, error) {
	var id spiffeid.ID
	var err error
	switch p.Mode {
	case "spiffe":
		var ok bool
		if id, ok = grpccredentials.PeerIDFromContext(ctx); !ok {
			err = ErrUnauthenticated
		}
	case "xfcc":
		if !loopback(peerAddr) {
			err = fmt.Errorf("%w: x-forwarded-client-cert is trusted only from the co-located proxy", ErrUnauthenticated)
		} else {
			id, err = xfccID(xfccValue)
		}
	default:
		err = ErrUnauthenticated
	}
	if err == nil {
		err = p.Authorize(id, model)
	}
	if err != nil {
		p.count(err, "grpc")
	}
	return id, err
}

// xfccID is the SPIFFE ID of the element the co-located proxy appended;
// a malformed header is refused, never guessed at.
func xfccID(v string) (spiffeid.ID, error) {
	uri, err := xfcc.URI(v)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	id, err := spiffeid.FromString(uri)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: x-forwarded-client-cert has no SPIFFE URI", ErrUnauthenticated)
	}
	return id, nil
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

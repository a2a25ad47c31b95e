package identity

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestAuthorize(t *testing.T) {
	a, b := spiffeid.RequireFromString("spiffe://td/a"), spiffeid.RequireFromString("spiffe://td/b")
	foreign := spiffeid.RequireFromString("spiffe://other/a")
	member := &Policy{Mode: "spiffe", TrustDomain: spiffeid.RequireTrustDomainFromString("td")}
	if member.Authorize(a, "m") != nil || !errors.Is(member.Authorize(foreign, "m"), ErrForbidden) {
		t.Fatal("trust-domain membership")
	}
	listed := &Policy{Mode: "spiffe", TrustDomain: spiffeid.RequireTrustDomainFromString("td"),
		Allow: map[string][]spiffeid.ID{"m": {a}, "*": {b}}}
	if listed.Authorize(a, "m") != nil || !errors.Is(listed.Authorize(b, "m"), ErrForbidden) {
		t.Fatal("a model's own list replaces the others and the trust domain")
	}
	if listed.Authorize(b, "n") != nil || !errors.Is(listed.Authorize(a, "n"), ErrForbidden) {
		t.Fatal("the * list for other models")
	}
}

func TestXFCCOnlyFromLoopback(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := &Policy{Mode: "xfcc", TrustDomain: spiffeid.RequireTrustDomainFromString("mesh.local"), Denied: NewDenied(reg)}
	xfcc := `By=spiffe://mesh.local/ns/m/sa/model;Hash=1;Subject="";URI=spiffe://mesh.local/ns/apps/sa/web`
	r := httptest.NewRequest("POST", "/v1/completions", nil)
	r.RemoteAddr = "127.0.0.1:51234"
	r.Header.Set("X-Forwarded-Client-Cert", xfcc)
	if id, err := p.HTTP(r, "m"); err != nil || id.String() != "spiffe://mesh.local/ns/apps/sa/web" {
		t.Fatalf("from the co-located proxy: %v %v", id, err)
	}
	r.RemoteAddr = "10.0.0.7:51234"
	if _, err := p.HTTP(r, "m"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("from elsewhere: %v", err)
	}
	r.RemoteAddr = "[::1]:1"
	r.Header.Set("X-Forwarded-Client-Cert", "Hash=1")
	if _, err := p.HTTP(r, "m"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("no URI: %v", err)
	}
	r.Header.Set("X-Forwarded-Client-Cert", "URI=spiffe://elsewhere/x")
	if _, err := p.HTTP(r, "m"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("foreign trust domain: %v", err)
	}
	if _, err := p.GRPC(context.Background(), "m", xfcc, "127.0.0.1:9"); err != nil {
		t.Fatalf("gRPC from loopback: %v", err)
	}
	if _, err := p.GRPC(context.Background(), "m", xfcc, "192.168.1.1:9"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("gRPC from elsewhere: %v", err)
	}
	if n := testutil.ToFloat64(p.Denied.WithLabelValues("unauthenticated", "http")); n != 2 {
		t.Fatalf("unauthenticated http %v", n)
	}
	if n := testutil.ToFloat64(p.Denied.WithLabelValues("forbidden", "http")); n != 1 {
		t.Fatalf("forbidden http %v", n)
	}
}

// TestXFCCInjection: with Envoy's APPEND_FORWARD the client's own
// x-forwarded-client-cert comes first; an element with an unbalanced
// quote would swallow the one the proxy appended and name the victim.
// It is refused, as is a second header line; a well-formed client
// element is ignored in favour of the proxy's.
func TestXFCCInjection(t *testing.T) {
	p := &Policy{Mode: "xfcc", TrustDomain: spiffeid.RequireTrustDomainFromString("mesh.local"), Denied: NewDenied(prometheus.NewRegistry())}
	appended := `By=spiffe://mesh.local/ns/m/sa/model;Hash=1;Subject="CN=a,O=b";URI=spiffe://mesh.local/ns/apps/sa/attacker`
	for _, tc := range []struct {
		lines []string
		want  string // "" for refused
	}{
		{[]string{`URI=spiffe://mesh.local/ns/apps/sa/victim;X=",` + appended}, ""},
		{[]string{`URI=spiffe://mesh.local/ns/apps/sa/victim;X="\",` + appended}, ""},
		{[]string{`URI=spiffe://mesh.local/ns/apps/sa/victim,` + appended}, "spiffe://mesh.local/ns/apps/sa/attacker"},
		{[]string{appended, `URI=spiffe://mesh.local/ns/apps/sa/victim`}, ""},
		{[]string{`URI=spiffe://mesh.local/ns/apps/sa/victim;URI=spiffe://mesh.local/ns/apps/sa/other`}, ""},
	} {
		r := httptest.NewRequest("POST", "/v1/completions", nil)
		r.RemoteAddr = "127.0.0.1:51234"
		for _, l := range tc.lines {
			r.Header.Add("X-Forwarded-Client-Cert", l)
		}
		id, err := p.HTTP(r, "m")
		switch {
		case tc.want == "" && !errors.Is(err, ErrUnauthenticated):
			t.Errorf("%q: accepted as %v (%v)", tc.lines, id, err)
		case tc.want != "" && (err != nil || id.String() != tc.want):
			t.Errorf("%q: %v %v, want %s", tc.lines, id, err, tc.want)
		}
		if len(tc.lines) == 1 {
			gid, gerr := p.GRPC(context.Background(), "m", tc.lines[0], "127.0.0.1:9")
			if (tc.want == "") != (gerr != nil) || (tc.want != "" && gid.String() != tc.want) {
				t.Errorf("gRPC %q: %v %v", tc.lines, gid, gerr)
			}
		}
	}
}

func TestSPIFFEModeNeedsTLS(t *testing.T) {
	p := &Policy{Mode: "spiffe", TrustDomain: spiffeid.RequireTrustDomainFromString("td")}
	if _, err := p.HTTP(httptest.NewRequest("GET", "/", nil), "m"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatal(err)
	}
	if _, err := p.GRPC(context.Background(), "m", "", ""); !errors.Is(err, ErrUnauthenticated) {
		t.Fatal(err)
	}
	if (&Policy{}).Enabled() || (*Policy)(nil).Enabled() || !p.Enabled() {
		t.Fatal("Enabled")
	}
}

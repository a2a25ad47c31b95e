package xfcc

import (
	"strings"
	"testing"
)

// The examples of Envoy's documentation (x-forwarded-client-cert).
const (
	docOne = `By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com`
	docTwo = `By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;URI=http://testclient.lyft.com,By=http://backend.lyft.com;Hash=9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e;URI=http://frontend.lyft.com`
	docDNS = `By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com`
	// What Envoy appends for a mesh caller (a quoted Subject with the
	// separators in it).
	envoyElem = `By=spiffe://td/ns/m/sa/model;Hash=abc123;Subject="CN=x,O=y;z=\"q\"";URI=spiffe://td/ns/a/sa/attacker`
)

func TestURI(t *testing.T) {
	for in, want := range map[string]string{
		"URI=spiffe://x/y":      "spiffe://x/y",
		`URI="spiffe://x/y"`:    "spiffe://x/y",
		`Subject="a;b,c";URI=u`: "u",
		"URI=first,URI=second":  "second",
		"URI=first, URI=second": "second",
		docOne:                  "http://testclient.lyft.com",
		docTwo:                  "http://frontend.lyft.com",
		docDNS:                  "http://testclient.lyft.com",
		`Subject="CN=Doe\, John,O=\"Q\"";URI=spiffe://td/a`: "spiffe://td/a",
		"URI=http://h/p?a=b":                          "http://h/p?a=b",
		"URI=spiffe://td/ns/v/sa/victim," + envoyElem: "spiffe://td/ns/a/sa/attacker",
	} {
		if got, err := URI(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
}

// TestInjection: a client's element that tries to swallow or fake the
// element the proxy appends makes the header malformed; it is never read
// as the victim's identity.
func TestInjection(t *testing.T) {
	for _, client := range []string{
		`URI=spiffe://td/ns/v/sa/victim;X="`,
		`URI=spiffe://td/ns/v/sa/victim;X="\"`,
		`URI=spiffe://td/ns/v/sa/victim;X="a\`,
		`URI=spiffe://td/ns/v/sa/victim;X="";Y="`,
		`URI=spiffe://td/ns/v/sa/victim;Subject="`,
		`URI="spiffe://td/ns/v/sa/victim`,
	} {
		h := client + "," + envoyElem
		if got, err := URI(h); err == nil && got != "spiffe://td/ns/a/sa/attacker" {
			t.Errorf("%q: read as %q", h, got)
		}
	}
}

func TestMalformed(t *testing.T) {
	for _, in := range []string{
		"", ",", "URI", "URI=a,", "=x", "URI=a;", `URI="a"b`, `URI="a`, `URI=a"b`,
		"URI=a;URI=b", "By=x", "URI=a,,URI=b", "UR I=a", "URI=\x00",
		strings.Repeat("URI=a,", MaxElements) + "URI=b",
	} {
		if got, err := URI(in); err == nil {
			t.Errorf("%q: accepted as %q", in, got)
		}
	}
}

// quote writes a value as Envoy does.
func quote(v string) string {
	if !strings.ContainsAny(v, `,;="`) {
		return v
	}
	return `"` + strings.ReplaceAll(v, `"`, `\"`) + `"`
}

// FuzzURI: whatever a client puts before the element the proxy appends,
// the header is refused or read as the proxy's element.
func FuzzURI(f *testing.F) {
	f.Add(`URI=spiffe://td/ns/v/sa/victim;X="`)
	f.Add(`By=spiffe://a/b;URI=spiffe://c/d,URI="spiffe://e/f"`)
	f.Add(`Subject="x,y;z";URI=u`)
	f.Fuzz(func(t *testing.T, client string) {
		if got, err := URI(client + "," + envoyElem); err == nil && got != "spiffe://td/ns/a/sa/attacker" {
			t.Fatalf("%q read as %q", client, got)
		}
		URI(client)
	})
}

// FuzzRoundTrip: an element written by Envoy's quoting rule reads back
// exactly (values with the separators, quotes and backslashes).
func FuzzRoundTrip(f *testing.F) {
	f.Add("CN=a,O=b", `x"y`, "spiffe://td/ns/a/sa/b")
	f.Fuzz(func(t *testing.T, subject, dns, uri string) {
		if strings.ContainsFunc(subject+dns+uri, func(r rune) bool { return r == '\\' || r < ' ' || r == 0x7f }) {
			return // Envoy escapes only quotes; control bytes are not header text
		}
		if uri == "" || dns == "" {
			return
		}
		h := "By=spiffe://td/p;Subject=" + quote(subject) + ";DNS=" + quote(dns) + ";URI=" + quote(uri)
		elems, err := Parse(h)
		if err != nil {
			t.Fatalf("%q: %v", h, err)
		}
		e := elems[len(elems)-1]
		if s, _, _ := e.Get("subject"); s != subject {
			t.Fatalf("subject %q, want %q", s, subject)
		}
		if d, _, _ := e.Get("DNS"); d != dns {
			t.Fatalf("dns %q, want %q", d, dns)
		}
		if u, err := URI(h); err != nil || u != uri {
			t.Fatalf("uri %q %v, want %q", u, err, uri)
		}
	})
}

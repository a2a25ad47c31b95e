package xfcc

import "testing"

func TestURI(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "",
		"By=a;Hash=b":           "",
		"URI=spiffe://x/y":      "spiffe://x/y",
		`URI="spiffe://x/y"`:    "spiffe://x/y",
		`Subject="a;b,c";URI=u`: "u",
		"URI=first,URI=second":  "second",
		`By=spiffe://mesh.local/ns/gw/sa/envoy;Hash=def;Subject="CN=x,O=y";URI=spiffe://mesh.local/ns/b/sa/caller`: "spiffe://mesh.local/ns/b/sa/caller",
	} {
		if got := URI(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func FuzzURI(f *testing.F) {
	f.Add(`By=spiffe://a/b;URI=spiffe://c/d,URI="spiffe://e/f"`)
	f.Add(`Subject="x,y;z";URI=u`)
	f.Fuzz(func(t *testing.T, v string) { URI(v) })
}

package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCommand(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		handled bool
		code    int
		out     string
	}{
		{[]string{"version"}, true, 0, "x devel"},
		{[]string{"-version"}, true, 0, "x devel"},
		{[]string{"--version"}, true, 0, "x devel"},
		{[]string{"version", "now"}, true, 2, "takes no arguments"},
		{[]string{"serve"}, false, 0, ""},
		{nil, false, 0, ""},
	} {
		var out bytes.Buffer
		handled, code := Command("x", tc.args, &out)
		if handled != tc.handled || code != tc.code || !strings.Contains(out.String(), tc.out) {
			t.Errorf("%q: handled %v code %d out %q; want %v %d containing %q", tc.args, handled, code, out.String(), tc.handled, tc.code, tc.out)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		ok   bool
		out  string
	}{
		{[]string{"-n", "3"}, 0, true, ""},
		{[]string{"-n", "3", "stray"}, 2, false, `unexpected arguments ["stray"]`},
		{[]string{"-h"}, 0, false, "-n int"},
		{[]string{"-m"}, 2, false, "flag provided but not defined: -m"},
	} {
		var out bytes.Buffer
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(&out)
		fs.Int("n", 0, "a number")
		code, ok := Parse(fs, tc.args)
		if code != tc.code || ok != tc.ok || !strings.Contains(out.String(), tc.out) {
			t.Errorf("%q: code %d ok %v out %q; want %d %v containing %q", tc.args, code, ok, out.String(), tc.code, tc.ok, tc.out)
		}
	}
}

func TestBuildInfoGauge(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Collector())
	want := `# HELP autoglm_build_info The build of this binary: version, VCS revision and Go version in the labels; always 1.
# TYPE autoglm_build_info gauge
autoglm_build_info{goversion="` + Build().GoVersion + `",revision="unknown",version="devel"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "autoglm_build_info"); err != nil {
		t.Error(err)
	}
}

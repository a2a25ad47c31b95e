// Package cli is the command-line convention the three binaries share:
// subcommands, `help` (and -h) for usage, `version` (and -version) for
// the build, stray arguments refused, and exit codes 0 (done), 1 (failed)
// and 2 (bad usage or configuration). It also reads the build's identity
// from the Go build info, for `version` and the autoglm_build_info gauge.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Info is one build's identity.
type Info struct {
	// Version is the module version the binary was built at (go install
	// m@v1.2.3 gives v1.2.3); "devel" for a build in a checkout.
	Version string
	// Revision is the VCS commit (with "-dirty" for a modified tree), or
	// "unknown" where the build recorded none.
	Revision  string
	GoVersion string
}

// Build reads the running binary's build info.
func Build() Info {
	i := Info{Version: "devel", Revision: "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return i
	}
	i.GoVersion = bi.GoVersion
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		i.Version = v
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && i.Revision != "unknown" {
		i.Revision += "-dirty"
	}
	return i
}

// String is the line `version` prints.
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", i.Version, i.Revision, i.GoVersion)
}

// Collector is the autoglm_build_info gauge: always 1, the build in its
// labels (the Prometheus convention of *_build_info).
func Collector() prometheus.Collector {
	i := Build()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "autoglm_build_info",
		Help:        "The build of this binary: version, VCS revision and Go version in the labels; always 1.",
		ConstLabels: prometheus.Labels{"version": i.Version, "revision": i.Revision, "goversion": i.GoVersion},
	})
	g.Set(1)
	return g
}

// Command handles what every binary answers the same way: `NAME
// version`, `NAME -version` and `NAME --version` print the build to out.
// It reports whether args asked for it, and the exit code (2 for
// arguments after it).
func Command(name string, args []string, out io.Writer) (handled bool, code int) {
	if len(args) == 0 {
		return false, 0
	}
	switch args[0] {
	case "version", "-version", "--version":
	default:
		return false, 0
	}
	if len(args) > 1 {
		fmt.Fprintf(out, "%s version: takes no arguments, got %q\n", name, args[1:])
		return true, 2
	}
	fmt.Fprintf(out, "%s %s\n", name, Build())
	return true, 0
}

// IsHelp says whether arg asks for usage: help, -h, -help or --help.
func IsHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

// Parse parses args into fs and refuses arguments left after the flags.
// ok is false when the caller should exit with code: 0 after -h, 2 for a
// bad flag or a stray argument (both explained on fs's output).
func Parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected arguments %q (flags are written -name value)\n", fs.Name(), fs.Args())
		return 2, false
	}
	return 0, true
}

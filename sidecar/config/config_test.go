package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseOverDefaults(t *testing.T) {
	c := Default()
	err := Parse([]byte("server:\n  http_addr: 127.0.0.1:9000\nbatch:\n  max_queue_delay: 5ms\nadmission:\n  max_queue: 9\n"), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.HTTPAddr != "127.0.0.1:9000" || c.Batch.MaxQueueDelay != 5*time.Millisecond || c.Admission.MaxQueue != 9 || c.Server.GRPCAddr != ":9090" {
		t.Fatalf("%+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestStrictErrorsNamePaths(t *testing.T) {
	c := Default()
	err := Parse([]byte("server:\n  http_adr: x\nbatch:\n  max_batch_size: lots\nengine:\n  test:\n    step_cost: soon\nbogus: 1\n"), &c)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"server.http_adr (line 2): unknown field",
		"batch.max_batch_size (line 4): cannot unmarshal",
		"engine.test.step_cost (line 7)",
		"bogus (line 8): unknown field",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestValidateReportsAll(t *testing.T) {
	c := Default()
	c.Batch.MaxBatchSize = 0
	c.Admission.MaxQueue = -1
	c.Engine.Kind = "gpu"
	c.Log.Format = "xml"
	err := c.Validate()
	for _, want := range []string{"batch.max_batch_size: must be at least 1", "admission.max_queue", "engine.kind", "log.format"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestLoadFileThenFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(path, []byte("engine:\n  model: from-file\nadmission:\n  max_queue: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	apply := Flags(fs)
	if err := fs.Parse([]string{"-model", "from-flag", "-max-batch-size", "3"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, apply)
	if err != nil {
		t.Fatal(err)
	}
	if c.Engine.Model != "from-flag" || c.Admission.MaxQueue != 7 || c.Batch.MaxBatchSize != 3 {
		t.Fatalf("flags must override the file, the file the defaults: %+v", c)
	}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	Flags(fs)
	if err := fs.Parse([]string{"-max-queue", "many"}); err == nil {
		t.Fatal("non-integer flag accepted")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Fatal("missing file accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("server:\n  http_addr: x\n"))
	f.Add([]byte("batch: [1, 2]\n"))
	f.Add([]byte("engine:\n  test:\n    slots: 3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Default()
		_ = Parse(b, &c)
		_ = c.Validate()
	})
}

func TestIdentityAndCacheValidation(t *testing.T) {
	c := Default()
	if err := Parse([]byte("identity:\n  mode: spiffe\n  allow: [\"not-an-id\"]\ncache:\n  redis_url: redis://127.0.0.1:6379/0\n"), &c); err != nil {
		t.Fatal(err)
	}
	err := c.Validate()
	for _, want := range []string{"identity.allow[0]", "cache.allow: is required when identity.mode is set"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	c = Default()
	Parse([]byte("identity:\n  mode: xfcc\n  trust_domain: mesh.local\ncache:\n  redis_url: redis://r:6379\n  allow: [\"spiffe://mesh.local/ns/autoglm/sa/autoglm-model\"]\n"), &c)
	if err := c.Validate(); err != nil {
		t.Fatalf("valid identity and cache: %v", err)
	}
	// The cache endpoint with no identity mode: anyone could PUT answers
	// for other tenants. Refused, unless the dev-only switch says so.
	for _, tc := range []struct{ yaml, want string }{
		{"cache:\n  redis_url: redis://r:6379\n", "cache.redis_url: the cache endpoint needs identity.mode"},
		{"cache:\n  redis_url: redis://r:6379\n  insecure_allow_unauthenticated: true\n  allow: [\"spiffe://td/x\"]\n", "cache.allow: needs identity.mode"},
		{"identity:\n  mode: xfcc\n  trust_domain: td\ncache:\n  redis_url: redis://r:6379\n  allow: [\"spiffe://td/x\"]\n  insecure_allow_unauthenticated: true\n", "cache.insecure_allow_unauthenticated: contradicts"},
		{"cache:\n  redis_url: redis://r:6379\n  insecure_allow_unauthenticated: true\n", ""},
	} {
		c = Default()
		if err := Parse([]byte(tc.yaml), &c); err != nil {
			t.Fatal(err)
		}
		err := c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	c = Default()
	Parse([]byte("identity:\n  mode: maybe\n"), &c)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "identity.mode") {
		t.Fatalf("bad mode: %v", err)
	}
}

func TestMissingModelFileSaysSo(t *testing.T) {
	c := Default()
	c.Engine.Kind, c.Engine.Native.ModelPath = "native", "/nonexistent/model.gguf"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "engine.native.model_path: /nonexistent/model.gguf: no such file") {
		t.Errorf("missing model: %v", err)
	}
	c.Engine.Native.ModelPath = t.TempDir()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("a directory: %v", err)
	}
}

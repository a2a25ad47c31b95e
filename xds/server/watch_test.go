package server

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/xds/config"
)

// TestWatch: the file is published at once, changes after a quiet
// debounce; a broken or missing file keeps the last good version.
func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "models.yaml")
	os.WriteFile(path, configYAML2(9001, 9002, 90, 10), 0o644)
	s := New(slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Watch(ctx, path, 50*time.Millisecond) }()
	defer func() { stop(); <-done }()
	wait := func(what string, cond func(Status) bool) Status {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := s.Wait(wctx, cond); err != nil {
			t.Fatalf("timed out waiting for %s: %+v", what, s.Status())
		}
		return s.Status()
	}
	first := wait("the first version", func(st Status) bool { return st.Version != "" }).Version

	os.WriteFile(path, configYAML2(9001, 9002, 50, 50), 0o644)
	second := wait("the change", func(st Status) bool { return st.Version != first }).Version

	os.WriteFile(path, []byte("apiVersion: autoglm.io/v1alpha1\nmodels: [{name: m}]\n"), 0o644)
	st := wait("the rejection", func(st Status) bool { return st.LastError != "" })
	if st.Version != second || !strings.Contains(st.LastError, "models[0].versions") {
		t.Fatalf("after a broken file: %+v", st)
	}
	os.Remove(path)
	st = wait("the read error", func(st Status) bool { return strings.Contains(st.LastError, "no such file") })
	if st.Version != second {
		t.Fatalf("after the file went away: %+v", st)
	}
	os.WriteFile(path, configYAML2(9001, 9002, 50, 50), 0o644) // the same as the served version
	wait("recovery", func(st Status) bool { return st.LastError == "" && st.Version == second })
}

// TestCheckRejects: a configuration the check refuses (e.g. a DNS name
// that does not resolve) is not published; the old version stays.
func TestCheckRejects(t *testing.T) {
	s := New(slog.New(slog.DiscardHandler))
	if err := s.Publish(parse(t, configYAML2(9001, 9002, 90, 10))); err != nil {
		t.Fatal(err)
	}
	v := s.Status().Version
	s.Check = func(*config.Config) error { return errors.New("models[0].versions[0].dns: x does not resolve") }
	if err := s.Publish(parse(t, configYAML2(9001, 9002, 10, 90))); err == nil {
		t.Fatal("published despite the check")
	}
	if st := s.Status(); st.Version != v || !strings.Contains(st.LastError, "does not resolve") {
		t.Fatalf("%+v", st)
	}
}

package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
)

func versions(n int) []byte {
	y := "apiVersion: autoglm.io/v1alpha1\nlisteners: {grpc: [autoglm-inference]}\nmodels:\n  - name: m\n    versions:\n"
	for i := range n {
		w := 0
		if i == 0 {
			w = 100
		}
		y += fmt.Sprintf("      - {name: v%d, weight: %d, endpoints: [\"127.0.0.1:%d\"], grpc_port: 9000}\n", i+1, w, 8080+i)
	}
	return []byte(y)
}

// TestRepublishCannotUndoAnEdit reproduces the lost update: a re-publish
// (discovery changed) that began before a file edit and ends after it put
// the old configuration back. Its discovery call is held open while the
// edit is published; the edit must be what is served in the end.
func TestRepublishCannotUndoAnEdit(t *testing.T) {
	s := New(slog.New(slog.DiscardHandler))
	var calls atomic.Int32
	entered, release, edited := make(chan struct{}), make(chan struct{}), make(chan struct{})
	s.SetDiscovery(func(*config.Config) compile.Discovered {
		if calls.Add(1) == 2 {
			close(entered)
			<-release
		}
		return nil
	})
	if err := s.Publish(parse(t, versions(1))); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.Republish() }()
	<-entered
	go func() { defer wg.Done(); s.Publish(parse(t, versions(2))); close(edited) }()
	// Before the fix the edit was published at once, while the re-publish
	// was held; now it waits for the re-publish. Either way, then let the
	// re-publish end.
	select {
	case <-edited:
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	wg.Wait()
	if got := len(s.Config().Models[0].Versions); got != 2 {
		t.Fatalf("served configuration has %d versions, want 2 (the edit was lost)", got)
	}
}

// TestOneWriter: the file watcher, discovery re-publishes and a rollout's
// weights arriving together all end up in the served configuration: the
// last file, the last weights. Run with -race.
func TestOneWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "models.yaml")
	os.WriteFile(path, versions(2), 0o644)
	s := New(slog.New(slog.DiscardHandler))
	var discovered atomic.Int32
	s.SetDiscovery(func(*config.Config) compile.Discovered { discovered.Add(1); return nil })
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go s.Watch(ctx, path, 5*time.Millisecond)
	if err := s.Wait(ctx, func(st Status) bool { return st.Version != "" }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range 200 {
			s.Republish()
		}
	}()
	go func() {
		defer wg.Done()
		for w := range 101 {
			if err := s.SetWeights("m", map[string]int{"v1": 100 - w, "v2": w}); err != nil {
				t.Error(err)
			}
		}
	}()
	for n := 3; n <= 6; n++ {
		os.WriteFile(path, versions(n), 0o644)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := s.Wait(wctx, func(Status) bool { return len(s.Config().Models[0].Versions) == n }); err != nil {
			t.Fatalf("edit to %d versions not published: %v", n, err)
		}
		cancel()
	}
	wg.Wait()
	s.Republish()
	c := s.Config()
	if len(c.Models[0].Versions) != 6 {
		t.Fatalf("served %d versions, want the last file's 6", len(c.Models[0].Versions))
	}
	w, _ := withWeights(c, s.weights)
	if w.Models[0].Versions[0].Weight != 0 || w.Models[0].Versions[1].Weight != 100 {
		t.Fatalf("weights: %+v, want the rollout's last (v1 0, v2 100)", w.Models[0].Versions)
	}
	if discovered.Load() < 2 {
		t.Fatal("discovery never ran")
	}
}

// Package golden compares test output with golden files and, on a
// mismatch, prints where they differ as a line diff.
package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Check compares got with the file at path; with update set it writes got
// there instead. hint says how to update (e.g. "go test ./xds/envoygen
// -update").
func Check(t testing.TB, path string, got []byte, update bool, hint string) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (%s writes it)", err, hint)
	}
	if d := Diff(string(want), string(got)); d != "" {
		t.Errorf("%s is stale (%s, and review the diff):\n%s", path, hint, d)
	}
}

// Diff is a line diff of want and got ("" when equal): the lines between
// their common head and tail, want's marked -, got's +, with up to three
// lines of context either side.
func Diff(want, got string) string {
	if want == got {
		return ""
	}
	a, b := strings.Split(want, "\n"), strings.Split(got, "\n")
	head := 0
	for head < len(a) && head < len(b) && a[head] == b[head] {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && a[len(a)-1-tail] == b[len(b)-1-tail] {
		tail++
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "@@ line %d @@\n", head+1)
	for _, l := range a[max(head-3, 0):head] {
		sb.WriteString("  " + l + "\n")
	}
	for _, l := range a[head : len(a)-tail] {
		sb.WriteString("- " + l + "\n")
	}
	for _, l := range b[head : len(b)-tail] {
		sb.WriteString("+ " + l + "\n")
	}
	for _, l := range a[len(a)-tail : min(len(a)-tail+3, len(a))] {
		sb.WriteString("  " + l + "\n")
	}
	return sb.String()
}

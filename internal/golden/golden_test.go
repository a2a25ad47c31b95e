package golden

import "testing"

func TestDiff(t *testing.T) {
	if d := Diff("a\nb\n", "a\nb\n"); d != "" {
		t.Fatalf("equal: %q", d)
	}
	want := "@@ line 3 @@\n  a\n  b\n- c\n+ C\n+ D\n  e\n  f\n"
	if d := Diff("a\nb\nc\ne\nf", "a\nb\nC\nD\ne\nf"); d != want {
		t.Fatalf("got\n%s\nwant\n%s", d, want)
	}
}

package bucket

import (
	"testing"
	"time"
)

func TestTakeRefillAndFloor(t *testing.T) {
	l := Limit{Rate: 2, Burst: 4}
	t0 := time.Unix(100, 0)
	s, ok := State{}, false
	for i := range 4 {
		var taken bool
		s, taken, _, _ = l.Take(s, ok, t0, 1, 0)
		ok = true
		if !taken {
			t.Fatalf("take %d refused from a full bucket of 4", i)
		}
	}
	_, taken, level, retry := l.Take(s, ok, t0, 1, 0)
	if taken || level != 0 || retry != 500*time.Millisecond {
		t.Fatalf("empty bucket: taken %v level %v retry %v", taken, level, retry)
	}
	// 1 s later: 2 tokens back; a floor of 1.5 leaves room for none of cost 1.
	_, taken, _, retry = l.Take(s, ok, t0.Add(time.Second), 1, 1.5)
	if taken || retry != 250*time.Millisecond {
		t.Fatalf("floor: taken %v retry %v", taken, retry)
	}
	s, taken, level, _ = l.Take(s, ok, t0.Add(time.Second), 1, 0)
	if !taken || level != 1 {
		t.Fatalf("refilled: taken %v level %v", taken, level)
	}
	// Refill stops at the burst; an adjustment may leave debt.
	if lv := l.Level(s, ok, t0.Add(time.Hour)); lv != 4 {
		t.Fatalf("level after an hour %v", lv)
	}
	s = l.Adjust(s, ok, t0.Add(time.Second), -10)
	if s.Tokens != -9 {
		t.Fatalf("debt %v", s.Tokens)
	}
}

func TestEncodeDecode(t *testing.T) {
	s := State{Tokens: 12.5, At: 123456789}
	back, ok, err := Decode(s.Encode())
	if err != nil || !ok || back != s {
		t.Fatalf("%+v %v %v", back, ok, err)
	}
	if _, ok, err := Decode(nil); ok || err != nil {
		t.Fatal("empty value must be a new bucket")
	}
	if _, _, err := Decode([]byte{1, 2, 3}); err == nil {
		t.Fatal("short value accepted")
	}
}

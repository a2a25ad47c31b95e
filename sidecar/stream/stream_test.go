package stream

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// TestReaderWriter: text delivered while the reader reads arrives whole
// and in order, and the end follows it.
func TestReaderWriter(t *testing.T) {
	var s Stream
	s.Init(context.Background(), nil)
	go func() {
		for range 1000 {
			s.Deliver("ab")
		}
		s.Finish(Result{Finish: FinishStop, CompletionTokens: 1000}, nil)
	}()
	var b strings.Builder
	for {
		t1, err := s.Next()
		b.WriteString(t1)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if b.String() != strings.Repeat("ab", 1000) || s.Result().CompletionTokens != 1000 {
		t.Fatalf("read %d bytes, result %+v", b.Len(), s.Result())
	}
	s.Finish(Result{}, errors.New("late")) // ignored: already ended
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
}

// TestLeave: when the reader's context ends, a queued generation ends with
// what leave returns; one already running reports the context's error.
func TestLeave(t *testing.T) {
	queuedErr := errors.New("left the queue")
	for _, queued := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		var s Stream
		s.Init(ctx, func(err error) (error, bool) {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("leave got %v", err)
			}
			return queuedErr, queued
		})
		cancel()
		_, err := s.Wait()
		want := context.Canceled
		if queued {
			want = queuedErr
		}
		if !errors.Is(err, want) {
			t.Fatalf("queued=%v: %v", queued, err)
		}
		select {
		case <-s.Ended():
			if !queued {
				t.Fatal("a running generation is ended by its producer, not its reader")
			}
		default:
			if queued {
				t.Fatal("a generation taken out of the queue must end")
			}
		}
	}
}

// TestEndedWithContext: a stream that ended as the context did keeps its
// result for Wait.
func TestEndedWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var s Stream
	s.Init(ctx, nil)
	s.Deliver("done")
	s.Finish(Result{Finish: FinishLength}, nil)
	cancel()
	if text, err := s.Wait(); text != "done" || err != io.EOF {
		t.Fatalf("%q %v", text, err)
	}
}

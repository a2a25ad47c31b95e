package server

import (
	"bytes"
	"context"
	"os"
	"time"

	"github.com/open-autoglm/autoglm/xds/config"
)

// Watch publishes the configuration file at path now and after every
// change, once the file has been quiet for debounce. A file that fails to
// read, parse or validate is rejected (once) and the last good version
// stays. It polls every debounce/2, which also sees the symlink swaps of
// Kubernetes ConfigMap volumes.
func (s *Server) Watch(ctx context.Context, path string, debounce time.Duration) error {
	var handled, seen []byte // contents last published or rejected, last read
	var changed time.Time
	readErr := ""
	tick := time.NewTicker(max(debounce/2, 10*time.Millisecond))
	defer tick.Stop()
	for {
		data, err := os.ReadFile(path)
		if err != nil {
			if err.Error() != readErr {
				readErr = err.Error()
				s.Reject(err)
			}
		} else {
			readErr = ""
			if !bytes.Equal(data, seen) {
				seen, changed = data, time.Now()
			}
			// The first contents are handled at once, later ones when quiet.
			if !bytes.Equal(seen, handled) && (handled == nil || time.Since(changed) >= debounce) {
				handled = seen
				if c, err := config.Parse(seen); err != nil {
					s.Reject(err)
				} else {
					s.Publish(c)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Package cache is the sidecar's response-cache endpoint, the remote tier
// behind the proxy-wasm filter's local one: the filter GETs and PUTs
// opaque entries (its own encoding, with their expiry) by key over HTTP,
// through Envoy's cache cluster; Redis keeps them, with a TTL.
//
//	GET /v1/cache/{key}  200 with the entry, or 404
//	PUT /v1/cache/{key}  body = the entry; x-autoglm-cache-ttl: seconds → 204
package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// DefaultMaxTTL caps entries' time to live when the configuration sets no
// cap.
const DefaultMaxTTL = time.Hour

// HeaderTTL carries an entry's time to live, in seconds.
const HeaderTTL = "x-autoglm-cache-ttl"

// Store keeps entries.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
}

// Redis is a Store in Redis under a key prefix.
type Redis struct {
	C      *redis.Client
	Prefix string
}

// Get implements Store.
func (r Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	b, err := r.C.Get(ctx, r.Prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	return b, err == nil, err
}

// Set implements Store.
func (r Redis) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	return r.C.Set(ctx, r.Prefix+key, val, ttl).Err()
}

// Config bounds what the endpoint accepts.
type Config struct {
	MaxEntryBytes int
	MaxTTL        time.Duration
	// Timeout bounds each Redis call: the filter waits on this endpoint
	// with a request held, and fails open when it is slow.
	Timeout time.Duration
}

// Handler serves the endpoint; reg (may be nil) gets its counters.
func Handler(s Store, c Config, reg prometheus.Registerer) http.Handler {
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "autoglm_cache_requests_total",
		Help: "Cache endpoint requests by operation and result (hit, miss, stored, rejected, error).",
	}, []string{"op", "result"})
	if reg != nil {
		reg.MustRegister(ops)
	}
	h := &handler{s: s, c: c, ops: ops}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cache/{key}", h.get)
	mux.HandleFunc("PUT /v1/cache/{key}", h.put)
	return mux
}

type handler struct {
	s   Store
	c   Config
	ops *prometheus.CounterVec
}

// ValidKey: 1..200 of [A-Za-z0-9:_.-].
func ValidKey(k string) bool {
	if len(k) == 0 || len(k) > 200 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == ':' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func (h *handler) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	if h.c.Timeout > 0 {
		return context.WithTimeout(r.Context(), h.c.Timeout)
	}
	return r.Context(), func() {}
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !ValidKey(key) {
		h.ops.WithLabelValues("get", "rejected").Inc()
		http.Error(w, "invalid cache key", http.StatusBadRequest)
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	val, ok, err := h.s.Get(ctx, key)
	switch {
	case err != nil:
		h.ops.WithLabelValues("get", "error").Inc()
		http.Error(w, "cache store unavailable", http.StatusServiceUnavailable)
	case !ok:
		h.ops.WithLabelValues("get", "miss").Inc()
		w.WriteHeader(http.StatusNotFound)
	default:
		h.ops.WithLabelValues("get", "hit").Inc()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(val)
	}
}

func (h *handler) put(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	ttlS, err := strconv.ParseInt(r.Header.Get(HeaderTTL), 10, 64)
	if !ValidKey(key) || err != nil || ttlS < 1 {
		h.ops.WithLabelValues("put", "rejected").Inc()
		http.Error(w, "need a valid key and "+HeaderTTL+" (seconds ≥ 1)", http.StatusBadRequest)
		return
	}
	// Capped before multiplying: a huge TTL must not wrap to a negative
	// duration, which Redis takes as "no expiry". An entry always expires.
	maxTTL := h.c.MaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	ttl := maxTTL
	if ttlS < int64(maxTTL/time.Second) {
		ttl = time.Duration(ttlS) * time.Second
	}
	val, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(h.c.MaxEntryBytes)))
	if err != nil {
		h.ops.WithLabelValues("put", "rejected").Inc()
		http.Error(w, "entry too large", http.StatusRequestEntityTooLarge)
		return
	}
	ctx, cancel := h.ctx(r)
	defer cancel()
	if err := h.s.Set(ctx, key, val, ttl); err != nil {
		h.ops.WithLabelValues("put", "error").Inc()
		http.Error(w, "cache store unavailable", http.StatusServiceUnavailable)
		return
	}
	h.ops.WithLabelValues("put", "stored").Inc()
	w.WriteHeader(http.StatusNoContent)
}

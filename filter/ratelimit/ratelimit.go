// Package ratelimit speaks to Envoy's rate limit service
// (github.com/envoyproxy/ratelimit) over its HTTP endpoint, POST /json: a
// RateLimitRequest in, a RateLimitResponse out, both as protobuf JSON.
// The filter uses it for a limit global to every proxy, on top of the
// per-proxy buckets.
package ratelimit

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// Request is a RateLimitRequest for one descriptor made of entries (key,
// value), hitting it hits times.
func Request(domain string, entries [][2]string, hits int) []byte {
	b := append([]byte(`{"domain":`), quote(domain)...)
	b = append(b, `,"descriptors":[{"entries":[`...)
	for i, e := range entries {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"key":`...)
		b = append(b, quote(e[0])...)
		b = append(b, `,"value":`...)
		b = append(b, quote(e[1])...)
		b = append(b, '}')
	}
	b = append(b, `]}],"hitsAddend":`...)
	b = strconv.AppendInt(b, int64(hits), 10)
	return append(b, '}')
}

// quote is a JSON string (encoding/json is reflection, slow in wasm).
func quote(s string) []byte {
	b := []byte{'"'}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		case c < utf8.RuneSelf:
			b = append(b, c)
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
			continue
		}
		i++
	}
	return append(b, '"')
}

// Verdict is what a RateLimitResponse says about the request.
type Verdict struct {
	OverLimit bool
	// Limit is the smallest requests_per_unit among the descriptors over
	// their limit (0: not given); Remaining their smallest remainder.
	Limit, Remaining uint32
	// Reset is the longest wait until an over-limit descriptor resets
	// (0: not given).
	Reset time.Duration
}

type response struct {
	OverallCode string `json:"overallCode"`
	Statuses    []struct {
		Code         string `json:"code"`
		CurrentLimit *struct {
			RequestsPerUnit uint32 `json:"requestsPerUnit"`
		} `json:"currentLimit"`
		LimitRemaining     uint32 `json:"limitRemaining"`
		DurationUntilReset string `json:"durationUntilReset"`
	} `json:"statuses"`
}

// ParseResponse reads a RateLimitResponse. An overall code other than OK
// and OVER_LIMIT (UNKNOWN) is an error: the service could not decide.
func ParseResponse(b []byte) (Verdict, error) {
	var r response
	if err := json.Unmarshal(b, &r); err != nil {
		return Verdict{}, errors.New("ratelimit: the response is not a RateLimitResponse: " + err.Error())
	}
	switch r.OverallCode {
	case "OK":
		return Verdict{}, nil
	case "OVER_LIMIT":
	default:
		return Verdict{}, errors.New("ratelimit: overall code " + strconv.Quote(r.OverallCode))
	}
	v := Verdict{OverLimit: true}
	for _, s := range r.Statuses {
		if s.Code != "OVER_LIMIT" {
			continue
		}
		if s.CurrentLimit != nil && (v.Limit == 0 || s.CurrentLimit.RequestsPerUnit < v.Limit) {
			v.Limit, v.Remaining = s.CurrentLimit.RequestsPerUnit, s.LimitRemaining
		}
		// protobuf JSON durations are seconds with a suffix: "53s", "0.5s".
		if d, err := time.ParseDuration(s.DurationUntilReset); err == nil && d > v.Reset && d < 366*24*time.Hour {
			v.Reset = d
		}
	}
	return v, nil
}

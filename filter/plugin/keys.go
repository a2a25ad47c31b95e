package plugin

import (
	"encoding/hex"

	"golang.org/x/crypto/blake2b"

	"github.com/open-autoglm/autoglm/filter/openai"
)

// keyMemo remembers, per VM, the cache keys of recent request bodies and
// the scope tags of recent tenants. Deriving a key — the body's canonical
// form, then a BLAKE2b hash — costs ~30 µs for a 200-byte chat request in
// wasm (~20 ns a byte of hashing alone), where looking the same bytes up
// in a Go map costs a few: a repeated request, the case a cache is for,
// skips both. The map compares the whole body, so a memo hit is exact;
// the memo only ever holds what Key would compute again.
type keyMemo struct {
	keys   map[string]*memoKey // request body → its keys
	bytes  int                 // the bodies' size
	scopes map[string]string   // tenant → scope tag
}

// memoKey is a body's openai.Request.Key, and its last cache key (a
// tenant often repeats a request: the key is not even concatenated).
type memoKey struct {
	key, scope, cacheKey string
}

const (
	memoBytes   = 1 << 20  // bodies remembered, per VM
	memoMaxBody = 16 << 10 // larger bodies are not remembered
	memoScopes  = 4096
)

func newKeyMemo() keyMemo {
	return keyMemo{keys: map[string]*memoKey{}, scopes: map[string]string{}}
}

// cacheKey is the shared-data key of a request's response in scope (a
// tenant; "" for a cache all tenants share): cachePrefix, the request's
// key, then the scope's tag.
func (m *keyMemo) cacheKey(req *openai.Request, scope string) string {
	body := req.Body()
	mk := m.keys[string(body)]
	if mk == nil {
		mk = &memoKey{key: req.Key()}
		if len(body) <= memoMaxBody {
			for m.bytes+len(body) > memoBytes && len(m.keys) > 0 {
				for b := range m.keys { // a random entry
					delete(m.keys, b)
					m.bytes -= len(b)
					break
				}
			}
			m.keys[string(body)] = mk
			m.bytes += len(body)
		}
	}
	if mk.cacheKey == "" || mk.scope != scope {
		mk.scope, mk.cacheKey = scope, cachePrefix+mk.key+":"+m.scope(scope)
	}
	return mk.cacheKey
}

// scope tags a tenant with a hash of its name (keys stay short and in the
// remote tier's alphabet).
func (m *keyMemo) scope(tenant string) string {
	if tenant == "" {
		return "shared"
	}
	t, ok := m.scopes[tenant]
	if !ok {
		if len(m.scopes) >= memoScopes {
			clear(m.scopes)
		}
		sum := blake2b.Sum256([]byte(tenant))
		t = hex.EncodeToString(sum[:16])
		m.scopes[tenant] = t
	}
	return t
}

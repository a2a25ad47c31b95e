package envoygen

import (
	"encoding/json"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// YAML renders the resources as one YAML document with a list per type,
// in Envoy's JSON field names; keys are sorted, so the output is stable.
func (r *Resources) YAML() ([]byte, error) {
	doc := map[string][]any{}
	for _, t := range []struct {
		name string
		list []types.Resource
	}{{"listeners", r.Listeners}, {"routes", r.Routes}, {"clusters", r.Clusters}, {"endpoints", r.Endpoints}} {
		doc[t.name] = []any{}
		for _, res := range t.list {
			b, err := protojson.Marshal(res)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				return nil, err
			}
			doc[t.name] = append(doc[t.name], v)
		}
	}
	return yaml.Marshal(doc)
}

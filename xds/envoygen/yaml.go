package envoygen

import (
	"encoding/json"
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// Types are the resource types' names, in the order YAML lists them.
var Types = []string{"listeners", "routes", "clusters", "endpoints"}

// YAMLByType renders each resource type as its own YAML document (a list),
// by the names in Types.
func (r *Resources) YAMLByType() (map[string][]byte, error) {
	out := map[string][]byte{}
	for name, list := range map[string][]types.Resource{"listeners": r.Listeners, "routes": r.Routes, "clusters": r.Clusters, "endpoints": r.Endpoints} {
		docs := []any{}
		for _, res := range list {
			b, err := protojson.Marshal(res)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				return nil, err
			}
			docs = append(docs, v)
		}
		y, err := yaml.Marshal(docs)
		if err != nil {
			return nil, err
		}
		out[name] = y
	}
	return out, nil
}

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

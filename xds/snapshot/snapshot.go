// Package snapshot is the last stage of the config path before the ADS
// server: it packs generated resources into a go-control-plane snapshot
// whose version is a hash of the content, so an unchanged configuration
// is never re-pushed, and checks it is consistent.
package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/open-autoglm/autoglm/xds/envoygen"
)

// Build validates r and returns its snapshot. Validation and hashing run
// on all cores: at 1 000 models they are most of the build.
func Build(r *envoygen.Resources) (*cache.Snapshot, error) {
	var all []types.Resource
	for _, list := range [][]types.Resource{r.Listeners, r.Routes, r.Clusters, r.Endpoints} {
		all = append(all, list...)
	}
	digests := make([][sha256.Size]byte, len(all))
	var g errgroup.Group
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		g.Go(func() error {
			for i := w; i < len(all); i += workers {
				if err := envoygen.ValidateResource(all[i]); err != nil {
					return err
				}
				b, err := marshal(all[i])
				if err != nil {
					return err
				}
				digests[i] = sha256.Sum256(b)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d %d %d %d;", len(r.Listeners), len(r.Routes), len(r.Clusters), len(r.Endpoints))
	for i := range digests {
		h.Write(digests[i][:])
	}
	version := hex.EncodeToString(h.Sum(nil))[:16]
	s, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: r.Listeners, resource.RouteType: r.Routes,
		resource.ClusterType: r.Clusters, resource.EndpointType: r.Endpoints,
	})
	if err != nil {
		return nil, err
	}
	if err := consistent(r); err != nil {
		return nil, fmt.Errorf("inconsistent snapshot: %w", err)
	}
	return s, nil
}

// marshal is deterministic: Envoy's API ships vtprotobuf marshalers,
// deterministic in their strict form and several times faster than
// reflection.
func marshal(res types.Resource) ([]byte, error) {
	if vt, ok := res.(interface{ MarshalVTStrict() ([]byte, error) }); ok {
		return vt.MarshalVTStrict()
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(res)
}

// consistent checks that every route configuration a listener names and
// every EDS cluster's endpoints are in r, and nothing unreferenced is.
// (go-control-plane's Snapshot.Consistent does not look into api_listeners.)
func consistent(r *envoygen.Resources) error {
	var errs []error
	routes := map[string]bool{}
	for _, res := range r.Routes {
		routes[res.(*route.RouteConfiguration).Name] = false
	}
	for _, res := range r.Listeners {
		l := res.(*listener.Listener)
		var cfgs []*anypb.Any
		if l.ApiListener != nil {
			cfgs = append(cfgs, l.ApiListener.ApiListener)
		}
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				cfgs = append(cfgs, f.GetTypedConfig())
			}
		}
		for _, a := range cfgs {
			var m hcm.HttpConnectionManager
			if a == nil || a.UnmarshalTo(&m) != nil {
				continue
			}
			name := m.GetRds().GetRouteConfigName()
			if _, ok := routes[name]; !ok {
				errs = append(errs, fmt.Errorf("listener %s: route configuration %q is missing", l.Name, name))
			}
			routes[name] = true
		}
	}
	for name, used := range routes {
		if !used {
			errs = append(errs, fmt.Errorf("route configuration %s: no listener uses it", name))
		}
	}
	eds := map[string]bool{}
	for _, res := range r.Endpoints {
		eds[res.(*endpoint.ClusterLoadAssignment).ClusterName] = false
	}
	for _, res := range r.Clusters {
		c := res.(*cluster.Cluster)
		if c.GetType() != cluster.Cluster_EDS {
			continue
		}
		if _, ok := eds[c.Name]; !ok {
			errs = append(errs, fmt.Errorf("cluster %s: endpoints are missing", c.Name))
		}
		eds[c.Name] = true
	}
	for name, used := range eds {
		if !used {
			errs = append(errs, fmt.Errorf("endpoints %s: no EDS cluster uses them", name))
		}
	}
	return errors.Join(errs...)
}

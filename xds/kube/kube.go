// Package kube discovers model endpoints in Kubernetes: it follows the
// EndpointSlices of the Services that versions name (service:) and reports
// their ready addresses, ahead of compile on the config path.
package kube

import (
	"context"
	"net"
	"sort"
	"strconv"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listers "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
)

// Watcher follows EndpointSlices cluster-wide.
type Watcher struct {
	factory informers.SharedInformerFactory
	lister  listers.EndpointSliceLister
	synced  cache.InformerSynced
	changed chan struct{}
}

// New returns a watcher over client; Run starts it.
func New(client kubernetes.Interface) *Watcher {
	f := informers.NewSharedInformerFactory(client, 10*time.Minute)
	inf := f.Discovery().V1().EndpointSlices()
	w := &Watcher{factory: f, lister: inf.Lister(), synced: inf.Informer().HasSynced, changed: make(chan struct{}, 1)}
	notify := func(any) {
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: notify, DeleteFunc: notify, UpdateFunc: func(_, n any) { notify(n) },
	})
	return w
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	w.factory.Start(ctx.Done())
	<-ctx.Done()
	w.factory.Shutdown()
	return nil
}

// WaitForSync waits for the first full list.
func (w *Watcher) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), w.synced)
}

// Changed receives a value after EndpointSlices changed.
func (w *Watcher) Changed() <-chan struct{} { return w.changed }

// Discovered are the ready endpoints of the Services c names, as
// host:port on each reference's port, sorted.
func (w *Watcher) Discovered(c *config.Config) compile.Discovered {
	out := compile.Discovered{}
	for _, m := range c.Models {
		for _, v := range m.Versions {
			if v.Service == nil {
				continue
			}
			ref := *v.Service
			if _, done := out[ref]; done {
				continue
			}
			slices, err := w.lister.EndpointSlices(ref.Namespace).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: ref.Name}))
			if err != nil {
				continue
			}
			seen := map[string]bool{}
			eps := []string{}
			for _, s := range slices {
				if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
					continue
				}
				for _, e := range s.Endpoints {
					// Ready unset means ready (the API's convention).
					if e.Conditions.Ready != nil && !*e.Conditions.Ready {
						continue
					}
					for _, a := range e.Addresses {
						hp := net.JoinHostPort(a, strconv.Itoa(ref.Port))
						if !seen[hp] {
							seen[hp] = true
							eps = append(eps, hp)
						}
					}
				}
			}
			sort.Strings(eps)
			out[ref] = eps
		}
	}
	return out
}

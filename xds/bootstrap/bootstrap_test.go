package bootstrap

import (
	"strings"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

func TestBuild(t *testing.T) {
	b, err := Build(Options{Node: "n1", Cluster: "c", ADS: "xds.autoglm.svc:18000", AdminPort: 9901})
	if err != nil {
		t.Fatal(err)
	}
	xc := b.StaticResources.Clusters[0]
	if b.Node.Id != "n1" || xc.GetType() != cluster.Cluster_STRICT_DNS || b.DynamicResources.AdsConfig.GrpcServices[0].GetEnvoyGrpc().ClusterName != xc.Name {
		t.Fatalf("%v", b)
	}
	if b, _ := Build(Options{Node: "n", Cluster: "c", ADS: "127.0.0.1:1"}); b.StaticResources.Clusters[0].GetType() != cluster.Cluster_STATIC || b.Admin != nil {
		t.Fatal("an IP address needs no DNS, and admin port 0 means none")
	}
	for _, o := range []Options{{Node: "n", Cluster: "c", ADS: "nohost"}, {Node: "n", Cluster: "c", ADS: ":80"}, {Node: "n", Cluster: "c", ADS: "h:0"}, {Cluster: "c", ADS: "h:1"}} {
		if _, err := Build(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	y, err := YAML(Options{Node: "n", Cluster: "c", ADS: "127.0.0.1:18000", AdminPort: 1})
	if err != nil || !strings.Contains(string(y), "clusterName: autoglm-xds") || !strings.Contains(string(y), "portValue: 18000") {
		t.Fatalf("%s %v", y, err)
	}
}

package envoygen

import (
	"slices"
	"testing"

	"github.com/open-autoglm/autoglm/xds/config"
)

// TestReservedClusters: validate keeps model clusters off the names of the
// clusters added here.
func TestReservedClusters(t *testing.T) {
	if !slices.Equal(config.ReservedClusters, []string{WasmSourceCluster, SPIREAgentCluster}) {
		t.Fatalf("config.ReservedClusters %v, envoygen adds %s and %s", config.ReservedClusters, WasmSourceCluster, SPIREAgentCluster)
	}
}

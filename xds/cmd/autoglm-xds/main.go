// Command autoglm-xds is the control plane: it serves Envoy (and
// proxyless gRPC clients) the routes, clusters and endpoints of a model
// configuration over ADS, and keeps them in step with the file.
//
//	autoglm-xds serve -config models.yaml -ads :18000 -status :18001
//	autoglm-xds validate -config models.yaml
//	autoglm-xds render -config models.yaml
//	autoglm-xds bootstrap -node envoy-1 -ads 127.0.0.1:18000
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/open-autoglm/autoglm/internal/cli"
	"github.com/open-autoglm/autoglm/xds/bootstrap"
	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/envoygen"
	k8s "github.com/open-autoglm/autoglm/xds/kube"
	"github.com/open-autoglm/autoglm/xds/metrics"
	"github.com/open-autoglm/autoglm/xds/rollout"
	"github.com/open-autoglm/autoglm/xds/server"
)

func main() {
	if ok, code := cli.Command("autoglm-xds", os.Args[1:], os.Stdout); ok {
		os.Exit(code)
	}
	cmd, args := "serve", os.Args[1:]
	if len(args) > 0 && cli.IsHelp(args[0]) {
		usage(os.Stdout)
		os.Exit(0)
	}
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		os.Exit(serve(args))
	case "validate":
		os.Exit(validate(args))
	case "render":
		os.Exit(render(args))
	case "bootstrap":
		os.Exit(boot(args))
	default:
		fmt.Fprintf(os.Stderr, "autoglm-xds: unknown command %q\n", cmd)
		usage(os.Stderr)
		os.Exit(2)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  autoglm-xds [serve] -config FILE [flags]  serve xDS (flags: autoglm-xds serve -h)
  autoglm-xds validate -config FILE         check a configuration; errors name the field path
  autoglm-xds render -config FILE           print the Envoy resources it compiles to
  autoglm-xds bootstrap [flags]             print an Envoy bootstrap that points at autoglm-xds
  autoglm-xds version                       print the build
Exit codes: 0 done, 1 failed, 2 bad usage or configuration.
`)
}

func load(fs *flag.FlagSet, args []string) (*config.Config, int) {
	path := fs.String("config", "", "configuration file (YAML, apiVersion autoglm.io/v1alpha1)")
	if code, ok := cli.Parse(fs, args); !ok {
		return nil, code
	}
	if *path == "" {
		fmt.Fprintln(os.Stderr, fs.Name()+": -config is required")
		return nil, 2
	}
	c, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s:\n%v\n", fs.Name(), *path, err)
		return nil, 1
	}
	return c, 0
}

func validate(args []string) int {
	c, rc := load(flag.NewFlagSet("autoglm-xds validate", flag.ContinueOnError), args)
	if c == nil {
		return rc
	}
	if err := resolves(c); err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-xds validate:", err)
		return 1
	}
	res, err := generate(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-xds validate:", err)
		return 1
	}
	fmt.Printf("ok: %d models, %d listeners, %d routes, %d clusters\n", len(c.Models), len(res.Listeners), len(res.Routes), len(res.Clusters))
	return 0
}

// generate translates c (no endpoints discovered: Services stay empty)
// and validates the resources.
func generate(c *config.Config) (*envoygen.Resources, error) {
	res, err := envoygen.Generate(compile.Compile(c, nil))
	if err == nil {
		err = res.Validate()
	}
	return res, err
}

func render(args []string) int {
	c, rc := load(flag.NewFlagSet("autoglm-xds render", flag.ContinueOnError), args)
	if c == nil {
		return rc
	}
	res, err := generate(c)
	var out []byte
	if err == nil {
		out, err = res.YAML()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-xds render:", err)
		return 1
	}
	os.Stdout.Write(out)
	return 0
}

func boot(args []string) int {
	fs := flag.NewFlagSet("autoglm-xds bootstrap", flag.ContinueOnError)
	node := fs.String("node", "envoy", "Envoy node id")
	cluster := fs.String("cluster", "autoglm", "Envoy node cluster")
	ads := fs.String("ads", "127.0.0.1:18000", "host:port of autoglm-xds's ADS server")
	admin := fs.Int("admin-port", 9901, "Envoy admin port on 127.0.0.1 (0: no admin)")
	if code, ok := cli.Parse(fs, args); !ok {
		return code
	}
	out, err := bootstrap.YAML(bootstrap.Options{Node: *node, Cluster: *cluster, ADS: *ads, AdminPort: *admin})
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-xds bootstrap:", err)
		return 2
	}
	os.Stdout.Write(out)
	return 0
}

func serve(args []string) int {
	fs := flag.NewFlagSet("autoglm-xds serve", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file, watched for changes")
	adsAddr := fs.String("ads", ":18000", "ADS gRPC listen address")
	statusAddr := fs.String("status", ":18001", "HTTP address of /status (JSON), /healthz and /readyz")
	debounce := fs.Duration("debounce", 500*time.Millisecond, "quiet time after a file change before it is published")
	planPath := fs.String("rollout", "", "canary rollout plan (YAML) to run once the configuration is published; state on /rollout")
	kube := fs.Bool("kube", false, "discover the endpoints of versions with service: from Kubernetes EndpointSlices (in-cluster, or -kubeconfig)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file for -kube outside a cluster")
	socket := fs.String("workload-socket", "", "serve ADS over mTLS with X.509 SVIDs from this SPIFFE Workload API (unix:///…); \"env\": $SPIFFE_ENDPOINT_SOCKET; empty: plain text")
	allowNodes := fs.String("allow-nodes", "", "with -workload-socket: comma-separated SPIFFE IDs of the Envoy nodes that may connect")
	trustDomain := fs.String("node-trust-domain", "", "with -workload-socket and no -allow-nodes: admit every member of this trust domain")
	istioVS := fs.String("istio-virtualservice", "", "with -rollout: write the canary weights to this VirtualService (NAMESPACE/NAME) instead of serving them (Istio mode)")
	stateCM := fs.String("rollout-state", "", "with -rollout: keep the rollout's step, state and weight in this ConfigMap (NAMESPACE/NAME), where every replica reads them: all serve the same weights and a new leader resumes the plan")
	leaseName := fs.String("leader-lease", "", "with -rollout: only the replica holding this coordination.k8s.io Lease (NAMESPACE/NAME) runs the plan")
	if code, ok := cli.Parse(fs, args); !ok {
		return code
	}
	if *path == "" {
		fmt.Fprintln(os.Stderr, "autoglm-xds serve: -config is required")
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if _, err := config.Load(*path); err != nil {
		fmt.Fprintf(os.Stderr, "autoglm-xds serve: %s:\n%v\n", *path, err)
		return 2
	}
	s := server.New(log)
	s.Check = resolves
	var plan *rollout.Plan
	if *planPath != "" {
		p, err := loadPlan(*planPath)
		if err != nil {
			fmt.Fprintf(os.Stderr, "autoglm-xds serve: -rollout %s:\n%v\n", *planPath, err)
			return 2
		}
		plan = &p
	}
	var ro *runner
	if plan != nil {
		var err error
		if ro, err = newRunner(s, *plan, log, *kubeconfig, *istioVS, *stateCM, *leaseName); err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-xds serve:", err)
			return 2
		}
	}
	var watcher *k8s.Watcher
	if *kube {
		rc, err := restConfig(*kubeconfig)
		if err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-xds serve: -kube:", err)
			return 2
		}
		client, err := kubernetes.NewForConfig(rc)
		if err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-xds serve: -kube:", err)
			return 2
		}
		watcher = k8s.New(client)
		s.SetDiscovery(watcher.Discovered)
	}
	if *socket != "" {
		authz, err := nodeAuthorizer(*allowNodes, *trustDomain)
		if err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-xds serve:", err)
			return 2
		}
		addr := *socket
		if addr == "env" {
			addr = os.Getenv("SPIFFE_ENDPOINT_SOCKET")
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		source, err := workloadapi.NewX509Source(sctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
		cancel()
		if err != nil {
			log.Error("workload api", "socket", addr, "err", err)
			return 1
		}
		defer source.Close()
		s.GRPCOptions = append(s.GRPCOptions, grpc.Creds(grpccredentials.MTLSServerCredentials(source, source, authz)))
		log.Info("ADS over mTLS", "socket", addr, "allow_nodes", *allowNodes, "node_trust_domain", *trustDomain)
	}
	reg := prometheus.NewRegistry()
	mc := metrics.Collector{Server: s}
	if ro != nil {
		mc.Rollout = func() rollout.Status { return ro.Report().Status }
	}
	reg.MustRegister(mc, cli.Collector())
	al, err := net.Listen("tcp", *adsAddr)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	sl, err := net.Listen("tcp", *statusAddr)
	if err != nil {
		log.Error("listen", "err", err)
		return 1
	}
	mux := http.NewServeMux()
	mux.Handle("GET /status", s.StatusHandler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /rollout", func(w http.ResponseWriter, _ *http.Request) {
		if ro == nil {
			http.Error(w, "no rollout (serve -rollout PLAN)", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ro.Report())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.Status().Version == "" {
			http.Error(w, "nothing published", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	if watcher != nil {
		g.Go(func() error { return watcher.Run(ctx) })
		if !watcher.WaitForSync(ctx) {
			log.Error("kubernetes: EndpointSlices did not sync")
			return 1
		}
		g.Go(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-watcher.Changed():
				}
				time.Sleep(*debounce / 2) // let a burst of changes settle
				s.Republish()
			}
		})
	}
	g.Go(func() error { return s.Watch(ctx, *path, *debounce) })
	g.Go(func() error { return s.Run(ctx, al) })
	g.Go(func() error {
		if err := hs.Serve(sl); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	if ro != nil {
		g.Go(func() error { return ro.Run(ctx) })
	}
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	log.Info("serving", "ads", al.Addr().String(), "status", sl.Addr().String(), "config", *path)
	if err := g.Wait(); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

// restConfig is the in-cluster configuration, or the kubeconfig's.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

// resolves checks the configuration's DNS names, 5 s at most.
func resolves(c *config.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Resolve(ctx, net.DefaultResolver.LookupHost)
}

// nodeAuthorizer admits the listed SPIFFE IDs, or the members of a trust
// domain.
func nodeAuthorizer(allow, td string) (tlsconfig.Authorizer, error) {
	if allow != "" {
		var ids []spiffeid.ID
		for _, a := range strings.Split(allow, ",") {
			id, err := spiffeid.FromString(strings.TrimSpace(a))
			if err != nil {
				return nil, fmt.Errorf("-allow-nodes: %q: %w", a, err)
			}
			ids = append(ids, id)
		}
		return tlsconfig.AuthorizeOneOf(ids...), nil
	}
	if td == "" {
		return nil, errors.New("-workload-socket needs -allow-nodes or -node-trust-domain")
	}
	t, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return nil, fmt.Errorf("-node-trust-domain: %w", err)
	}
	return tlsconfig.AuthorizeMemberOf(t), nil
}

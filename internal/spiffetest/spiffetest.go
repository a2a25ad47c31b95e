// Package spiffetest is a fake SPIFFE Workload API for tests: a real gRPC
// server on a unix socket that streams X.509 SVIDs signed by a test CA,
// and can rotate them.
package spiffetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// CA issues SVIDs of one trust domain.
type CA struct {
	TrustDomain string
	cert        *x509.Certificate
	key         crypto.Signer
	serial      int64
	mu          sync.Mutex
}

// NewCA makes a CA for spiffe://td.
func NewCA(t testing.TB, td string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://" + td)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"autoglm test CA"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{TrustDomain: td, cert: cert, key: key, serial: 1}
}

// SVID is a leaf certificate and its key.
type SVID struct {
	ID   string
	Cert *x509.Certificate
	DER  []byte
	Key  *ecdsa.PrivateKey
}

// Issue makes an X.509 SVID for id (a full spiffe:// URI) valid for ttl.
func (ca *CA) Issue(t testing.TB, id string, ttl time.Duration) SVID {
	t.Helper()
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(ttl),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, URIs: []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return SVID{ID: id, Cert: cert, DER: der, Key: key}
}

// Pool is the CA as a trust pool.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ClientTLS is a TLS client configuration presenting s and trusting the
// CA (server names are not checked: SPIFFE authenticates by URI SAN).
func (ca *CA) ClientTLS(s SVID) *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{{Certificate: [][]byte{s.DER}, PrivateKey: s.Key, Leaf: s.Cert}},
		InsecureSkipVerify: true, // verified below against the CA, as SPIFFE does
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}
}

// WorkloadAPI serves one workload's SVID.
type WorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	ca   *CA
	mu   sync.Mutex
	svid SVID
	subs map[chan SVID]struct{}
	// Addr is the socket address for go-spiffe (unix:///...).
	Addr string
}

// StartWorkloadAPI serves svid on a unix socket in a temporary directory.
func StartWorkloadAPI(t testing.TB, ca *CA, svid SVID) *WorkloadAPI {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	w := &WorkloadAPI{ca: ca, svid: svid, subs: map[chan SVID]struct{}{}, Addr: "unix://" + path}
	gs := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(gs, w)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return w
}

// Rotate pushes a new SVID to every watcher.
func (w *WorkloadAPI) Rotate(s SVID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.svid = s
	for ch := range w.subs {
		select {
		case ch <- s:
		default:
		}
	}
}

func (w *WorkloadAPI) response(s SVID) *workload.X509SVIDResponse {
	key, _ := x509.MarshalPKCS8PrivateKey(s.Key)
	return &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId: s.ID, X509Svid: s.DER, X509SvidKey: key, Bundle: w.ca.cert.Raw,
	}}}
}

// FetchX509SVID implements the Workload API.
func (w *WorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if md, _ := metadata.FromIncomingContext(stream.Context()); len(md.Get("workload.spiffe.io")) == 0 {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	ch := make(chan SVID, 1)
	w.mu.Lock()
	cur := w.svid
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.subs, ch)
		w.mu.Unlock()
	}()
	if err := stream.Send(w.response(cur)); err != nil {
		return err
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case s := <-ch:
			if err := stream.Send(w.response(s)); err != nil {
				return err
			}
		}
	}
}

// FetchX509Bundles implements the Workload API.
func (w *WorkloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	if err := stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{"spiffe://" + w.ca.TrustDomain: w.ca.cert.Raw}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

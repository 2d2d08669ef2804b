package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

func selfSigned(t *testing.T, now time.Time, validity time.Duration) *Bundle {
	t.Helper()
	b, err := SelfSigned([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, now, validity)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func countCerts(pemData []byte) int {
	n := 0
	for rest := pemData; ; n++ {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return n
		}
	}
}

// Renewal is due RenewBefore the expiry: the new CA is trusted next to the old one, the new
// certificate written, and at the next step only the new CA stays trusted.
func TestRotatorRenewsBeforeExpiry(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	var published [][]byte
	r := &Rotator{
		Dir: t.TempDir(), Current: selfSigned(t, t0, 90*24*time.Hour), RenewBefore: 30 * 24 * time.Hour,
		Make: func(at time.Time) (*Bundle, error) {
			return SelfSigned([]string{"localhost"}, nil, at, 90*24*time.Hour)
		},
		Publish: func(_ context.Context, ca []byte) error { published = append(published, ca); return nil },
		Now:     func() time.Time { return now },
	}
	first := r.Current
	now = t0.Add(59 * 24 * time.Hour)
	if err := r.Step(context.Background()); err != nil || r.Current != first || len(published) != 0 {
		t.Fatalf("renewed 31 days before expiry: err %v, published %d", err, len(published))
	}
	now = t0.Add(61 * 24 * time.Hour)
	if err := r.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r.Current == first || len(published) != 1 || countCerts(published[0]) != 2 ||
		!bytes.Contains(published[0], first.CAPEM) || !bytes.Contains(published[0], r.Current.CAPEM) {
		t.Fatalf("renewal 29 days before expiry: published %d bundles, the first with %d CAs", len(published), countCerts(published[0]))
	}
	if err := r.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(published) != 2 || !bytes.Equal(published[1], r.Current.CAPEM) {
		t.Errorf("the old CA is not dropped at the next step: %d bundles published", len(published))
	}
	if after, _ := NotAfter(r.Current.CertPEM); !after.Equal(now.Add(90 * 24 * time.Hour)) {
		t.Errorf("the new certificate expires at %s", after)
	}
}

// The webhook server picks the renewed certificate up from disk, without a restart.
func TestWebhookServerServesRenewedCertificate(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	first := selfSigned(t, now, time.Hour)
	if err := first.WriteServing(dir); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	srv := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: dir})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Start(ctx) }()
	served := func(ca []byte) (string, error) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		if err != nil {
			return "", err
		}
		defer func() { _ = conn.Close() }()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	wait := func(what string, ca []byte) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if _, err = served(ca); err == nil {
				return
			}
		}
		t.Fatalf("%s: %v", what, err)
	}
	wait("the first certificate served", first.CAPEM)
	r := &Rotator{Dir: dir, Current: first, RenewBefore: 2 * time.Hour,
		Make: func(at time.Time) (*Bundle, error) {
			return SelfSigned(nil, []net.IP{net.ParseIP("127.0.0.1")}, at, time.Hour)
		},
		Publish: func(context.Context, []byte) error { return nil },
		Now:     time.Now}
	if err := r.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if r.Current == first {
		t.Fatal("not renewed")
	}
	wait("the renewed certificate served (verified against the new CA only)", r.Current.CAPEM)
	if _, err := served(first.CAPEM); err == nil {
		t.Error(fmt.Errorf("the old certificate is still served"))
	}
}

// Package certs creates the self-signed CA and serving certificate the conversion webhook uses
// when nothing (OLM, cert-manager) provides one.
package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Bundle is a CA and a serving certificate it signed, PEM encoded.
type Bundle struct {
	CAPEM, CertPEM, KeyPEM []byte
}

// File names in the certificate directory; the same names OLM and controller-runtime use.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// SelfSigned creates a CA and a serving certificate for the given DNS names and IPs, valid from
// now-1h to now+validity.
func SelfSigned(dnsNames []string, ips []net.IP, now time.Time, validity time.Duration) (*Bundle, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "smi2istio-webhook-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: firstOr(dnsNames, "smi2istio-webhook")},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode serving key: %w", err)
	}
	return &Bundle{
		CAPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// WriteServing writes tls.crt and tls.key into dir (created 0700).
func (b *Bundle) WriteServing(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create certificate directory: %w", err)
	}
	// Each file replaced whole (rename): a reader never sees half a file.
	if err := writeAtomic(filepath.Join(dir, KeyFile), b.KeyPEM); err != nil {
		return fmt.Errorf("write serving key: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, CertFile), b.CertPEM); err != nil {
		return fmt.Errorf("write serving certificate: %w", err)
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// Rotator renews a self-signed bundle before it expires, without a restart: the new CA is trusted
// next to the old one first (Publish: the CRDs' conversion caBundle), then the new serving
// certificate is written where the webhook server reloads it from, and at the next step the old CA
// is dropped. A manager.Runnable.
type Rotator struct {
	// Dir is the webhook server's certificate directory.
	Dir string
	// Current is the bundle being served.
	Current *Bundle
	// Make creates a new bundle valid from now.
	Make func(now time.Time) (*Bundle, error)
	// Publish makes the apiserver trust caBundle (PEM, one or more CAs) for the conversion webhook.
	Publish func(ctx context.Context, caBundle []byte) error
	// RenewBefore: the bundle is renewed once it expires within this.
	RenewBefore time.Duration
	// Interval between checks; Now is the clock.
	Interval time.Duration
	Now      func() time.Time
	// OnError reports a failed step (it is retried at the next one).
	OnError func(error)

	dropOld bool
}

// Start checks every Interval until ctx ends.
func (r *Rotator) Start(ctx context.Context) error {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := r.Step(ctx); err != nil && r.OnError != nil {
				r.OnError(err)
			}
		}
	}
}

// NeedLeaderElection: every replica serves its own certificate.
func (r *Rotator) NeedLeaderElection() bool { return false }

// Step renews the bundle when it is due, or drops the old CA one step after a renewal.
func (r *Rotator) Step(ctx context.Context) error {
	now := r.Now()
	if r.dropOld {
		if err := r.Publish(ctx, r.Current.CAPEM); err != nil {
			return fmt.Errorf("drop the previous webhook CA: %w", err)
		}
		r.dropOld = false
	}
	notAfter, err := NotAfter(r.Current.CertPEM)
	if err != nil {
		return err
	}
	if now.Add(r.RenewBefore).Before(notAfter) {
		return nil
	}
	next, err := r.Make(now)
	if err != nil {
		return err
	}
	if err := r.Publish(ctx, append(append([]byte(nil), next.CAPEM...), r.Current.CAPEM...)); err != nil {
		return fmt.Errorf("trust the new webhook CA: %w", err)
	}
	if err := next.WriteServing(r.Dir); err != nil {
		return err
	}
	r.Current, r.dropOld = next, true
	return nil
}

// NotAfter is the expiry of the first certificate in certPEM.
func NotAfter(certPEM []byte) (time.Time, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return time.Time{}, fmt.Errorf("no PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse certificate: %w", err)
	}
	return c.NotAfter, nil
}

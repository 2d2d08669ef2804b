package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/smi/conversion"
	"github.com/smi2istio/smi2istio/internal/testing/proc"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

func parseFlags(t *testing.T, args ...string) options {
	t.Helper()
	fs := flag.NewFlagSet("smi2istio", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o options
	bindFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

// Metrics are served over HTTPS with authentication and authorization unless a run asks otherwise
// explicitly: by default, in the install manifest (which scrapes through the metrics Service and the
// ServiceMonitor sample, on the port the operator binds), and never in the harness by accident.
func TestMetricsAreSecureByDefault(t *testing.T) {
	o := parseFlags(t)
	if m := metricsOptions(o); o.metricsAddr != ":8443" || !m.SecureServing || m.FilterProvider == nil {
		t.Errorf("defaults: bind %q, secure %v, filter %v; want :8443, HTTPS, authenticated and authorized", o.metricsAddr, m.SecureServing, m.FilterProvider != nil)
	}
	if m := metricsOptions(parseFlags(t, "--metrics-secure=false")); m.SecureServing || m.FilterProvider != nil {
		t.Errorf("--metrics-secure=false: secure %v, filter %v; want plain HTTP", m.SecureServing, m.FilterProvider != nil)
	}
	// The e2e and bench harness scrape plain HTTP on loopback: they say so.
	if args := proc.Operator("bin", "log", "kubeconfig", "127.0.0.1:1", "", "127.0.0.1:2", "127.0.0.1:3").Args; !slices.Contains(args, "--metrics-secure=false") {
		t.Errorf("the harness's operator args %v do not ask for plain HTTP metrics", args)
	}

	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	args, err := install.ManagerArgs(objs)
	if err != nil {
		t.Fatal(err)
	}
	inCluster := parseFlags(t, args...)
	if !inCluster.metricsSecure {
		t.Errorf("install args %v serve metrics without authentication", args)
	}
	_, port, _ := strings.Cut(inCluster.metricsAddr, ":")
	var svc, monitor *unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == "Service" && strings.HasSuffix(obj.GetName(), "metrics-service") {
			svc = obj
		}
		if obj.GetKind() == "ClusterRole" && obj.GetName() == "smi2istio-metrics-reader" {
			rules, _, _ := unstructured.NestedSlice(obj.Object, "rules")
			if len(rules) != 1 {
				t.Errorf("metrics-reader: rules %v, want GET on /metrics only", rules)
			}
		}
	}
	if svc == nil {
		t.Fatal("no metrics Service in config/default")
	}
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	if len(ports) != 1 {
		t.Fatalf("metrics Service ports: %v", ports)
	}
	p := ports[0].(map[string]any)
	if target := p["targetPort"]; target != int64(8443) || port != "8443" || p["name"] != "https" {
		t.Errorf("metrics Service port %v -> %v, operator binds %q: want https -> 8443", p["name"], target, inCluster.metricsAddr)
	}
	mons, err := manifests.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "prometheus", "monitor.yaml"))
	if err != nil || len(mons) != 1 {
		t.Fatalf("ServiceMonitor sample: %v", err)
	}
	monitor = mons[0]
	sel, _, _ := unstructured.NestedStringMap(monitor.Object, "spec", "selector", "matchLabels")
	for k, v := range sel {
		if svc.GetLabels()[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s, the metrics Service has %v", k, v, svc.GetLabels())
		}
	}
	eps, _, _ := unstructured.NestedSlice(monitor.Object, "spec", "endpoints")
	if len(eps) != 1 || eps[0].(map[string]any)["port"] != "https" || eps[0].(map[string]any)["scheme"] != "https" {
		t.Errorf("ServiceMonitor endpoints %v: want the https port over HTTPS", eps)
	}
}

// Against the real apiserver: the metrics endpoint as main sets it up, running with the identity and
// ClusterRole the operator ships with (config/rbac/role.yaml), refuses a scrape without a token
// (401) and with the token of a ServiceAccount not bound to metrics-reader (403), and serves one
// bound to it.
func TestMetricsNeedATokenAllowedByMetricsReader(t *testing.T) {
	cp, err := localcp.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cp.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	const ns = "smi2istio-system"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	for _, f := range []string{"role.yaml", "metrics_reader_role.yaml"} {
		objs, err := manifests.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "rbac", f))
		must(err)
		for _, o := range objs {
			if o.GetKind() == "ClusterRole" {
				must(c.Create(ctx, o))
			}
		}
	}
	bind := func(sa, role string) {
		must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}}))
		if role != "" {
			must(c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}}))
		}
	}
	bind("controller-manager", "manager-role")
	bind("prometheus", "metrics-reader")
	bind("intruder", "")
	token := func(sa string) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}, metav1.CreateOptions{})
		must(err)
		return tr.Status.Token
	}

	// The operator as main sets it up, under its ServiceAccount.
	operator := rest.CopyConfig(cp.Config)
	operator.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":controller-manager"}
	addr, err := proc.FreeAddr()
	must(err)
	opts := metricsOptions(parseFlags(t, "--metrics-bind-address="+addr))
	httpClient, err := rest.HTTPClientFor(operator)
	must(err)
	srv, err := metricsserver.NewServer(opts, operator, httpClient)
	must(err)
	if err := metrics.Registry.Register(conversion.Conversions); err != nil && !errors.As(err, &prometheus.AlreadyRegisteredError{}) {
		t.Fatal(err)
	}
	conversion.Conversions.WithLabelValues("split.smi-spec.io/v1alpha2", "split.smi-spec.io/v1alpha4").Inc()
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()

	scraper := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the operator's self-signed certificate
	scrape := func(url, bearer string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		must(err)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := scraper.Do(req)
		if err != nil {
			return 0, err.Error(), ""
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), resp.Proto
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if code, _, _ := scrape("https://"+addr+"/metrics", ""); code != 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("metrics server stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics server not listening on %s after a minute", addr)
		}
	}
	url := "https://" + addr + "/metrics"
	if code, body, _ := scrape(url, ""); code != http.StatusUnauthorized {
		t.Errorf("without a token: HTTP %d %s, want 401", code, body)
	}
	// controller-runtime's filter answers 500 when the TokenReview reports an error, as it does for
	// a token it cannot parse: refused all the same.
	if code, body, _ := scrape(url, "not-a-token"); code != http.StatusUnauthorized && code != http.StatusInternalServerError || strings.Contains(body, "smi2istio_") {
		t.Errorf("with a token the apiserver does not know: HTTP %d %.100s, want it refused", code, body)
	}
	if code, body, _ := scrape(url, token("intruder")); code != http.StatusForbidden {
		t.Errorf("a ServiceAccount without metrics-reader: HTTP %d %s, want 403", code, body)
	}
	code, body, protocol := scrape(url, token("prometheus"))
	if code != http.StatusOK || !strings.Contains(body, `smi2istio_conversions_total{from="split.smi-spec.io/v1alpha2",to="split.smi-spec.io/v1alpha4"} `) {
		t.Errorf("a ServiceAccount bound to metrics-reader: HTTP %d, want the metrics; got %.300s", code, body)
	}
	if protocol != "HTTP/1.1" {
		t.Errorf("served over %s, want HTTP/1.1 (HTTP/2 off)", protocol)
	}
	if code, body, _ := scrape("http://"+addr+"/metrics", ""); code == http.StatusOK {
		t.Errorf("plain HTTP served the metrics: %.100s", body)
	}
}

//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/memlimit"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/internal/testing/olm"
	"github.com/smi2istio/smi2istio/internal/testing/proc"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// The operator installed from bundle/ alone as OLM installs it, running under its ServiceAccount's
// identity with only the rights the CSV grants; then upgraded to the next bundle (a changed CRD
// version set, a changed Deployment) over SMI objects written in the versions OSM users write
// (split v1alpha2, access v1alpha3, specs v1alpha4): everything survives and status stays current.
func TestOLMBundleInstallAndUpgrade(t *testing.T) {
	e := newInstallEnv(t)
	ctx := context.Background()
	const ns = "operators" // OLM's namespace for AllNamespaces operators
	n, err := olm.ReadBundle(filepath.Join(testenv.RepoRoot(), "bundle"))
	must(t, err)
	op := e.installBundle(n, ns, "bundle-n")
	e.applyDemo()
	e.eventually("bundle "+n.CSV.Name+" working under its ServiceAccount", func() error { return e.working(op) })
	e.expectCABundle(n.CSV.Spec.WebhookDefinitions[0].ConversionCRDs, "bundle "+n.CSV.Name)
	// It serves the certificate OLM mounted (it has no right to touch the CRDs' caBundle).
	expectLogged(t, op, `"certMode":"provided"`)
	e.eventually("bundle "+n.CSV.Name+" settled", func() error { return e.settled(op) })
	before := e.snapshot()

	// Bundle N+1, made from N as the next release would differ: TrafficSplit v1alpha1 no longer
	// served, the Deployment with one more arg and a larger memory limit (an env var through the
	// downward API).
	next := nextBundle(t, n)
	op2 := e.installBundle(next, ns, "bundle-n1") // OLM's rolling update: the new pod is ready...
	op.Stop()                                     // ...before the old one goes
	// The new operator leads (once the old one's lease expired) and has reconciled everything.
	e.eventually("bundle "+next.CSV.Name+" working under its ServiceAccount", func() error {
		if err := e.working(op2); err != nil {
			return err
		}
		return e.settled(op2)
	})
	e.expectCABundle(next.CSV.Spec.WebhookDefinitions[0].ConversionCRDs, "bundle "+next.CSV.Name)

	// The new Deployment is the one running: its arg and its env.
	log := readLog(t, op2)
	if !strings.Contains(log, `"worker count":2`) || strings.Contains(log, `"worker count":4`) {
		t.Errorf("bundle %s's --max-concurrent-reconciles=2 is not in force: the log's worker counts are %q", next.CSV.Name, regexp.MustCompile(`"worker count":\d+`).FindAllString(log, -1))
	}
	want := fmt.Sprintf(`"softLimitMiB":%d`, memlimit.SoftLimit(256<<20)>>20)
	if !strings.Contains(log, want) {
		t.Errorf("bundle %s's 256Mi memory limit is not in force: no %s in the log", next.CSV.Name, want)
	}
	// The served version set changed: v1alpha1 is gone, the versions users wrote are there.
	v1 := &unstructured.UnstructuredList{}
	v1.SetGroupVersionKind(schema.GroupVersionKind{Group: "split.smi-spec.io", Version: "v1alpha1", Kind: "TrafficSplitList"})
	if err := e.c.List(ctx, v1); err == nil || !apierrors.IsNotFound(err) && !strings.Contains(err.Error(), "no matches") {
		t.Errorf("TrafficSplit v1alpha1 is still served after the upgrade (list: %v)", err)
	}

	// Every SMI object and every output survived, the same objects with the same specs.
	after := e.snapshot()
	for _, d := range diffSnapshots(before, after) {
		t.Errorf("across the upgrade: %s", d)
	}
	// Each SMI object reads back in the version it was written in (through the new webhook and CA).
	for _, o := range e.demoSMI() {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Errorf("read %s %s/%s in %s after the upgrade: %v", o.GetKind(), o.GetNamespace(), o.GetName(), o.GetAPIVersion(), err)
		}
	}

	// Status is current: edits in the old versions are reconciled by the new operator, with the
	// rights of the new bundle (every SMI kind's status, an Event).
	e.exercise(op2, "bundle "+next.CSV.Name, 90)
	for _, p := range []*olm.Running{op, op2} {
		if err := noForbidden(p); err != nil {
			t.Error(err)
		}
	}
}

// dist/install.yaml, rendered as `make build-installer` renders it, applied as kubectl applies it,
// the operator under its ServiceAccount's identity with only the rights the manifest grants; then
// the same checks with one rule fewer must fail.
func TestInstallerManifestUnderItsServiceAccount(t *testing.T) {
	e := newInstallEnv(t)
	ctx := context.Background()
	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default")) // hack/build-installer's rendering
	must(t, err)
	pod := e.pod("installer")
	op, err := olm.InstallManifest(ctx, e.c, objs, pod)
	must(t, err)
	e.start(op)
	e.applyDemo()
	e.eventually("dist/install.yaml working under its ServiceAccount", func() error { return e.working(op) })
	// Self-signed mode: the operator set the caBundle itself (its RBAC allows it on these CRDs).
	var conversion []string
	for _, o := range objs {
		if s, _, _ := unstructured.NestedString(o.Object, "spec", "conversion", "strategy"); o.GetKind() == "CustomResourceDefinition" && s == "Webhook" {
			conversion = append(conversion, o.GetName())
		}
	}
	e.expectCABundle(conversion, "dist/install.yaml")
	expectLogged(t, op, `"certMode":"self-signed"`)
	e.exercise(op, "dist/install.yaml", 90)

	t.Run("one rule fewer fails", func(t *testing.T) {
		// The judge can fail: without the rule that lets it write TrafficSplit status, the same
		// checks report the operator forbidden.
		role := &rbacv1.ClusterRole{}
		for _, o := range objs {
			if o.GetKind() == "ClusterRoleBinding" && slices.ContainsFunc(subjects(o), func(s string) bool { return s == op.Namespace+"/"+op.ServiceAccount }) {
				name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
				must(t, e.c.Get(ctx, client.ObjectKey{Name: name}, role))
				if slices.ContainsFunc(role.Rules, grantsStatus) {
					break
				}
			}
		}
		i := slices.IndexFunc(role.Rules, grantsStatus)
		if i < 0 {
			t.Fatalf("no ClusterRole bound to %s/%s grants trafficsplits/status", op.Namespace, op.ServiceAccount)
		}
		role.Rules = slices.Delete(role.Rules, i, i+1)
		must(t, e.c.Update(ctx, role))
		split := e.demoSMI()[0]
		setWeights(t, split, 80, 20)
		e.apply(split)
		deadline := time.Now().Add(timeout)
		for {
			err := e.working(op)
			if err != nil && errors.Is(err, errForbidden) && strings.Contains(err.Error(), "trafficsplits/status") {
				t.Logf("as expected, without the rule: %v", err)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ClusterRole %s without its trafficsplits/status rule: the checks still pass after %s (last: %v)", role.Name, timeout, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
	})
}

// exercise makes the operator use the rights the demo needs beyond its first reconcile: a spec
// edit of every SMI kind, each in the version it was written in (every status patched for the new
// generation; the split's output follows its weight), then a TrafficTarget whose route is missing
// (a Warning Event through events.k8s.io), deleted again.
func (e *installEnv) exercise(op *olm.Running, step string, weight int64) {
	e.t.Helper()
	for _, o := range e.demoSMI() {
		switch o.GetKind() {
		case "TrafficSplit":
			setWeights(e.t, o, weight, 100-weight)
		case "TrafficTarget":
			rules, _, _ := unstructured.NestedSlice(o.Object, "spec", "rules")
			if len(rules) == 0 {
				e.t.Fatalf("TrafficTarget %s has no rules", o.GetName())
			}
			if m, _ := rules[0].(map[string]any); m["matches"] != nil {
				matches, _ := m["matches"].([]any)
				m["matches"] = matches[:1]
			}
			must(e.t, unstructured.SetNestedSlice(o.Object, rules, "spec", "rules"))
		case "HTTPRouteGroup":
			matches, _, _ := unstructured.NestedSlice(o.Object, "spec", "matches")
			for _, mt := range matches {
				m, _ := mt.(map[string]any)
				methods, _ := m["methods"].([]any)
				m["methods"] = append(methods, "HEAD")
			}
			must(e.t, unstructured.SetNestedSlice(o.Object, matches, "spec", "matches"))
		case "TCPRoute":
			ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "matches", "ports")
			must(e.t, unstructured.SetNestedSlice(o.Object, append(ports, int64(3307)), "spec", "matches", "ports"))
		default:
			e.t.Fatalf("the demo has a %s: exercise knows no edit for it", o.GetKind())
		}
		e.apply(o)
	}
	split := e.demoSMI()[0]
	e.eventually(step+": every SMI kind edited in its old version, reconciled", func() error {
		if err := e.working(op); err != nil {
			return err
		}
		return e.outputMentions("TrafficSplit", split, fmt.Sprintf(`"weight":%d`, weight))
	})
	ghost := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": "ghost-route", "namespace": "bookstore"},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": "bookstore", "namespace": "bookstore"},
			"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "no-such-routes"}},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}},
		},
	}}
	e.apply(ghost)
	e.eventually(step+": a Warning Event about a TrafficTarget whose route is missing", func() error {
		if err := noForbidden(op); err != nil {
			return err
		}
		list, err := e.cs.EventsV1().Events("bookstore").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Regarding.Name == ghost.GetName() && ev.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("no Warning Event regarding TrafficTarget bookstore/%s among %d", ghost.GetName(), len(list.Items))
	})
	must(e.t, e.c.Delete(context.Background(), ghost))
	e.eventually(step+": the TrafficTarget with a missing route deleted", func() error { return e.working(op) })
}

// grantsStatus: the rule lets the operator write TrafficSplit status.
func grantsStatus(r rbacv1.PolicyRule) bool {
	return slices.Contains(r.APIGroups, "split.smi-spec.io") && slices.Contains(r.Resources, "trafficsplits/status")
}

func subjects(o *unstructured.Unstructured) []string {
	subs, _, _ := unstructured.NestedSlice(o.Object, "subjects")
	var out []string
	for _, s := range subs {
		m, _ := s.(map[string]any)
		out = append(out, fmt.Sprint(m["namespace"])+"/"+fmt.Sprint(m["name"]))
	}
	return out
}

// installEnv is a control plane with Istio's CRDs and mesh config and the OSM 1.2 demo's
// namespaces in the mesh, on which the operator is installed (no istiod: the outputs and the
// status are what is checked).
type installEnv struct {
	t      *testing.T
	dir    string
	cp     *localcp.ControlPlane
	c      client.Client
	cs     kubernetes.Interface
	token  string // a bearer token allowed to scrape metrics
	demo   []*unstructured.Unstructured
	reader string // the metrics-reader ClusterRole bound for token
}

func newInstallEnv(t *testing.T) *installEnv {
	t.Helper()
	e := newBareInstallEnv(t)
	for _, n := range []string{"bookstore", "bookbuyer", "bookwarehouse"} {
		must(t, e.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"istio-injection": "enabled"}}}))
	}
	return e
}

// newBareInstallEnv is newInstallEnv without the demo's namespaces.
func newBareInstallEnv(t *testing.T) *installEnv {
	t.Helper()
	dir := t.TempDir()
	cp, err := localcp.Start(filepath.Join(dir, "kubeconfig"))
	must(t, err)
	e := &installEnv{t: t, dir: dir, cp: cp}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Log(err)
		}
	})
	scheme := kruntime.NewScheme()
	must(t, clientgoscheme.AddToScheme(scheme))
	must(t, apiextv1.AddToScheme(scheme))
	e.c, err = client.New(cp.Config, client.Options{Scheme: scheme})
	must(t, err)
	e.cs, err = kubernetes.NewForConfig(cp.Config)
	must(t, err)
	ctx := context.Background()
	f, err := istiocheck.CRDFile()
	must(t, err)
	istio, err := crds.LoadFile(f)
	must(t, err)
	must(t, crds.Install(ctx, e.c, istio))
	must(t, proc.InstallMeshConfig(ctx, e.c))
	return e
}

// pod is a fresh directory standing in for a pod of the operator.
func (e *installEnv) pod(name string) olm.Pod {
	dir := filepath.Join(e.dir, name)
	must(e.t, os.MkdirAll(dir, 0o700))
	return olm.Pod{Bin: operatorBin, Dir: dir, AdminKubeconfig: e.cp.Kubeconfig}
}

func (e *installEnv) installBundle(b *olm.Bundle, ns, pod string) *olm.Running {
	e.t.Helper()
	op, err := olm.InstallBundle(context.Background(), e.c, b, ns, e.pod(pod))
	must(e.t, err)
	e.start(op)
	return op
}

// start starts the operator (stopped when the test ends; its log printed if the test failed).
func (e *installEnv) start(op *olm.Running) {
	e.t.Helper()
	e.t.Cleanup(func() {
		op.Stop()
		if e.t.Failed() {
			e.t.Logf("last lines of %s's log (%s):\n%s", op.Name, op.Pod.Dir, op.Tail(60))
		}
	})
	must(e.t, op.Start())
}

// applyDemo applies the OSM 1.2 demo's apps and SMI objects as OSM publishes them.
func (e *installEnv) applyDemo() {
	e.t.Helper()
	for _, f := range []string{"bookbuyer", "bookstore", "bookstore-v2", "bookwarehouse", "mysql"} {
		e.applyFile(fixture("osm-v1.2-bookstore/apps/" + f + ".yaml"))
	}
	e.demo = nil
	for _, f := range []string{"split/traffic-split-50-50.yaml", "access/traffic-access-v1.yaml"} {
		e.demo = append(e.demo, e.applyFile(fixture("osm-v1.2-bookstore/"+f))...)
	}
}

// demoSMI is a copy of the SMI objects applied by applyDemo, as written (split first).
func (e *installEnv) demoSMI() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range e.demo {
		out = append(out, o.DeepCopy())
	}
	return out
}

func (e *installEnv) applyFile(path string) []*unstructured.Unstructured {
	e.t.Helper()
	objs, err := testenv.ReadManifests(path)
	must(e.t, err)
	for _, o := range objs {
		e.apply(o)
	}
	return objs
}

func (e *installEnv) apply(o *unstructured.Unstructured) {
	e.t.Helper()
	//nolint:staticcheck // SSA of an unstructured object, as kubectl apply --server-side does.
	if err := e.c.Patch(context.Background(), o.DeepCopy(), client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
		e.t.Fatalf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
	}
}

// eventually is eventually, except that a refusal by the apiserver fails at once (the log only
// grows: it cannot pass later).
func (e *installEnv) eventually(what string, cond func() error) {
	e.t.Helper()
	eventually(e.t, what, func() error {
		err := cond()
		if errors.Is(err, errForbidden) {
			e.t.Fatalf("%s: %v", what, err)
		}
		return err
	})
}

// errForbidden: the apiserver refused the operator something.
var errForbidden = errors.New("forbidden")

// working checks what an operator under its own rights must achieve: every SMI object Ready at its
// generation, outputs for every TrafficSplit and TrafficTarget, the configuration's status current,
// metrics served to a token the metrics-reader ClusterRole allows (and refused without one), and no
// "forbidden" in its log.
func (e *installEnv) working(op *olm.Running) error {
	if err := noForbidden(op); err != nil {
		return err
	}
	ctx := context.Background()
	owners := map[string]bool{}
	for _, gvk := range istioKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := e.c.List(ctx, list, client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}); err != nil {
			return err
		}
		for _, o := range list.Items {
			for _, r := range o.GetOwnerReferences() {
				owners[string(r.UID)] = true
			}
		}
	}
	count := 0
	for _, gvk := range smiKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := e.c.List(ctx, list); err != nil {
			return err
		}
		for _, o := range list.Items {
			count++
			what := fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
			if err := readyNow(&o); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if (gvk.Kind == "TrafficSplit" || gvk.Kind == "TrafficTarget") && !owners[string(o.GetUID())] {
				return fmt.Errorf("%s: no Istio object owned by it yet", what)
			}
		}
	}
	if count < len(e.demo) {
		return fmt.Errorf("%d SMI objects, want at least the demo's %d", count, len(e.demo))
	}
	cfg := &unstructured.Unstructured{}
	cfg.SetAPIVersion("smi2istio.io/v1alpha1")
	cfg.SetKind("SMI2IstioConfig")
	if err := e.c.Get(ctx, client.ObjectKey{Name: "default"}, cfg); err != nil {
		return fmt.Errorf("the operator's configuration: %w", err)
	}
	conds, _, _ := unstructured.NestedSlice(cfg.Object, "status", "conditions")
	if len(conds) == 0 {
		return fmt.Errorf("SMI2IstioConfig default has no status conditions")
	}
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if fmt.Sprint(m["observedGeneration"]) != fmt.Sprint(cfg.GetGeneration()) {
			return fmt.Errorf("SMI2IstioConfig default: condition %v observed generation %v, not %d", m["type"], m["observedGeneration"], cfg.GetGeneration())
		}
	}
	return e.scrape(op)
}

// readyNow: Ready=True for the object's generation.
func readyNow(o *unstructured.Unstructured) error {
	conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] != "Ready" {
			continue
		}
		if m["status"] != "True" || fmt.Sprint(m["observedGeneration"]) != fmt.Sprint(o.GetGeneration()) {
			return fmt.Errorf("Ready=%v/%v (%v) for generation %v, object at %d", m["status"], m["reason"], m["message"], m["observedGeneration"], o.GetGeneration())
		}
		return nil
	}
	return fmt.Errorf("no Ready condition yet")
}

// noForbidden fails if the apiserver refused the operator anything.
func noForbidden(op *olm.Running) error {
	data, err := os.ReadFile(op.Log)
	if err != nil {
		return err
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(strings.ToLower(l), "forbidden") {
			lines = append(lines, l)
		}
	}
	if len(lines) > 0 {
		return fmt.Errorf("%s (as %s): %w: %d log lines, the first:\n%s", op.Name, olm.ServiceAccountUser(op.Namespace, op.ServiceAccount), errForbidden, len(lines), lines[0])
	}
	return nil
}

func readLog(t *testing.T, op *olm.Running) string {
	t.Helper()
	data, err := os.ReadFile(op.Log)
	must(t, err)
	return string(data)
}

func expectLogged(t *testing.T, op *olm.Running, want string) {
	t.Helper()
	if !strings.Contains(readLog(t, op), want) {
		t.Errorf("%s's log has no %s", op.Name, want)
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// scrape GETs /metrics over HTTPS: 401 without a token, 200 with the token of a ServiceAccount
// bound to the install's metrics-reader ClusterRole (the operator checks it with a TokenReview and
// a SubjectAccessReview, under its own rights).
func (e *installEnv) scrape(op *olm.Running) error {
	_, err := e.metrics(op)
	return err
}

// metrics is scrape that returns the samples: value by metric name and labels.
func (e *installEnv) metrics(op *olm.Running) (map[string]float64, error) {
	addr := op.Addr["metrics-bind-address"]
	if addr == "" {
		return nil, fmt.Errorf("the Deployment's args set no --metrics-bind-address")
	}
	if e.token == "" {
		if err := e.metricsToken(); err != nil {
			return nil, err
		}
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the operator's self-signed metrics certificate
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {e.token, http.StatusOK}} {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			return nil, err
		}
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("scrape metrics: %w", err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			return nil, fmt.Errorf("GET /metrics (token: %t): %s, want %d: %s", tc.token != "", resp.Status, tc.want, firstLine(body.String()))
		}
		if tc.want == http.StatusOK {
			return parseMetrics(body.String()), nil
		}
	}
	return nil, fmt.Errorf("GET /metrics: no answer with a token")
}

// parseMetrics reads Prometheus text: value by `name{labels}` (as written) and by name (summed).
func parseMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			continue
		}
		series := line[:i]
		out[series] += v
		if j := strings.IndexByte(series, '{'); j >= 0 {
			out[series[:j]] += v
		}
	}
	return out
}

// settled: the operator leads, every controller it runs has reconciled something or has nothing
// to do, and no work is queued or in progress (what it had to do after its start is done).
func (e *installEnv) settled(op *olm.Running) error {
	m, err := e.metrics(op)
	if err != nil {
		return err
	}
	if m["leader_election_master_status"] < 1 {
		return fmt.Errorf("%s does not lead (yet)", op.Name)
	}
	for _, c := range []string{"trafficsplit", "access", "baseline", "config"} {
		if n := sumMatching(m, "controller_runtime_reconcile_total{", `controller="`+c+`"`); n < 1 {
			return fmt.Errorf("controller %s has reconciled nothing yet", c)
		}
	}
	if d := m["workqueue_depth"]; d > 0 {
		return fmt.Errorf("%v reconciles queued", d)
	}
	if a := m["controller_runtime_active_workers"]; a > 0 {
		return fmt.Errorf("%v reconciles in progress", a)
	}
	return nil
}

func sumMatching(m map[string]float64, prefix, part string) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) && strings.Contains(k, part) {
			n += v
		}
	}
	return n
}

// metricsToken binds the install's metrics-reader ClusterRole (the one granting GET /metrics) to a
// "prometheus" ServiceAccount and requests a token for it.
func (e *installEnv) metricsToken() error {
	ctx := context.Background()
	roles := &rbacv1.ClusterRoleList{}
	if err := e.c.List(ctx, roles); err != nil {
		return err
	}
	for _, r := range roles.Items {
		if strings.HasPrefix(r.Name, "system:") || r.Name == "cluster-admin" {
			continue
		}
		for _, rule := range r.Rules {
			if slices.Contains(rule.NonResourceURLs, "/metrics") && slices.Contains(rule.Verbs, "get") {
				e.reader = r.Name
			}
		}
	}
	if e.reader == "" {
		return fmt.Errorf("the install created no ClusterRole granting GET /metrics")
	}
	if err := e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "prometheus", Namespace: "monitoring"}}
	if err := e.c.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prometheus-smi2istio-metrics"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: e.reader},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}}}
	if err := e.c.Create(ctx, crb); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	tr, err := e.cs.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("request a token for %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	e.token = tr.Status.Token
	return nil
}

// expectCABundle: each conversion CRD has a caBundle the webhook's certificate chains to (the
// apiserver only converts through it when it does: the SMI objects' readback proves that; here
// it is checked that one is set at all).
func (e *installEnv) expectCABundle(names []string, step string) {
	e.t.Helper()
	if len(names) == 0 {
		e.t.Fatalf("%s: no conversion CRDs", step)
	}
	e.eventually(step+": the conversion CRDs' caBundle set", func() error {
		for _, n := range names {
			crd := &apiextv1.CustomResourceDefinition{}
			if err := e.c.Get(context.Background(), client.ObjectKey{Name: n}, crd); err != nil {
				return err
			}
			conv := crd.Spec.Conversion
			if conv == nil || conv.Strategy != apiextv1.WebhookConverter || conv.Webhook == nil || conv.Webhook.ClientConfig == nil ||
				len(conv.Webhook.ClientConfig.CABundle) == 0 {
				return fmt.Errorf("CRD %s: conversion %+v has no caBundle", n, conv)
			}
		}
		return nil
	})
}

// outputMentions: an Istio object owned by the SMI object holds want in its spec.
func (e *installEnv) outputMentions(kind string, src *unstructured.Unstructured, want string) error {
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(src.GroupVersionKind())
	if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(src), cur); err != nil {
		return err
	}
	for _, gvk := range istioKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := e.c.List(context.Background(), list, client.InNamespace(src.GetNamespace())); err != nil {
			return err
		}
		for _, o := range list.Items {
			for _, r := range o.GetOwnerReferences() {
				if r.UID != cur.GetUID() {
					continue
				}
				spec, _ := json.Marshal(o.Object["spec"])
				if strings.Contains(string(spec), want) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("no output of %s %s/%s holds %s", kind, src.GetNamespace(), src.GetName(), want)
}

// snapshot is every SMI object (in its stored version) and every generated Istio object: UID and
// spec by kind/namespace/name.
func (e *installEnv) snapshot() map[string]string {
	e.t.Helper()
	out := map[string]string{}
	add := func(gvk schema.GroupVersionKind, opts ...client.ListOption) {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		must(e.t, e.c.List(context.Background(), list, opts...))
		for _, o := range list.Items {
			spec, err := json.Marshal(o.Object["spec"])
			must(e.t, err)
			out[gvk.Kind+" "+o.GetNamespace()+"/"+o.GetName()] = string(o.GetUID()) + " " + string(spec)
		}
	}
	for _, gvk := range smiKinds {
		add(gvk)
	}
	for _, gvk := range istioKinds {
		add(gvk, client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"})
	}
	return out
}

func diffSnapshots(before, after map[string]string) []string {
	var out []string
	for k, v := range before {
		switch w, ok := after[k]; {
		case !ok:
			out = append(out, k+" is gone")
		case w != v:
			out = append(out, fmt.Sprintf("%s changed:\n  before %s\n  after  %s", k, v, w))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			out = append(out, k+" is new")
		}
	}
	sort.Strings(out)
	return out
}

// nextBundle is bundle N+1 made from N: version and name bumped (replacing N), TrafficSplit
// v1alpha1 no longer served (nor owned), the Deployment with --max-concurrent-reconciles=2 and a
// 256Mi memory limit (SMI2ISTIO_MEMORY_LIMIT follows it through the downward API).
func nextBundle(t *testing.T, n *olm.Bundle) *olm.Bundle {
	t.Helper()
	b := n.DeepCopy()
	csv := b.CSV
	v := csv.Spec.Version.Version
	v.Patch++
	csv.Spec.Replaces = csv.Name
	csv.Spec.Version.Version = v
	csv.Name = "smi2istio.v" + v.String()

	crd := b.CRD("trafficsplits.split.smi-spec.io")
	if crd == nil {
		t.Fatal("the bundle has no TrafficSplit CRD")
	}
	found := false
	for i := range crd.Spec.Versions {
		if crd.Spec.Versions[i].Name == "v1alpha1" {
			crd.Spec.Versions[i].Served = false
			found = true
		}
	}
	if !found {
		t.Fatal("the bundle's TrafficSplit CRD has no v1alpha1")
	}
	csv.Spec.CustomResourceDefinitions.Owned = slices.DeleteFunc(csv.Spec.CustomResourceDefinitions.Owned, func(d operatorsv1alpha1.CRDDescription) bool {
		return d.Name == crd.Name && d.Version == "v1alpha1"
	})

	deps := csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs
	if len(deps) != 1 || len(deps[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatal("the bundle's CSV has not exactly one Deployment with one container")
	}
	c := &deps[0].Spec.Template.Spec.Containers[0]
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--max-concurrent-reconciles") {
			t.Fatalf("bundle N already sets %s: pick another change for N+1", a)
		}
	}
	c.Args = append(c.Args, "--max-concurrent-reconciles=2")
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "SMI2ISTIO_MEMORY_LIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil
	}) {
		t.Fatal("bundle N's container has no SMI2ISTIO_MEMORY_LIMIT from its memory limit")
	}
	c.Resources.Limits[corev1.ResourceMemory] = resource.MustParse("256Mi")
	return b
}

package rbac_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/meshconfig"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// On the real apiserver, with the RBAC config/default installs and nothing else, the operator's
// ServiceAccount cannot list, watch or get ConfigMaps in general, only those named istio anywhere
// (by name, or listed and watched with the field selector metadata.name=istio, which the apiserver
// authorizes as a request for that name) and those of Istio's namespace; and with exactly that, the
// config reconciler as main sets it up (the manager's cache, mesh configs of revisions read in
// istio-system) resolves the revisions' mesh config in effect.
func TestMeshConfigReaderSuffices(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := testenv.Start(ctx, zap.New(), testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	if err := errors.Join(v1alpha1.AddToScheme(env.Scheme), cache.AddToScheme(env.Scheme)); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, n := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "smi2istio-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{meshconfig.RevisionLabel: "canary"}}},
	} {
		must(env.Client.Create(ctx, n))
	}
	objs, err := install.Objects(filepath.Join("..", "default"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			must(env.Client.Create(ctx, o))
		}
	}
	configMap := func(ns, name, rev, mesh string) {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string]string{"mesh": mesh}}
		if rev != "" {
			cm.Labels = map[string]string{meshconfig.RevisionLabel: rev}
		}
		must(env.Client.Create(ctx, cm))
	}
	configMap("istio-system", "istio-canary", "canary", "trustDomain: canary.example\n")
	configMap("tenant", "db-credentials", "", "")
	configMap("tenant", "istio-canary", "canary", "trustDomain: evil.example\n")

	operator := rest.CopyConfig(env.Config)
	operator.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:smi2istio-system:smi2istio-controller-manager"}
	c, err := client.NewWithWatch(operator, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var list corev1.ConfigMapList
	if err := c.List(ctx, &list); !apierrors.IsForbidden(err) {
		t.Errorf("list every ConfigMap: %v, want forbidden", err)
	}
	if err := c.List(ctx, &list, client.InNamespace("tenant")); !apierrors.IsForbidden(err) {
		t.Errorf("list a tenant's ConfigMaps: %v, want forbidden", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tenant", Name: "db-credentials"}, &corev1.ConfigMap{}); !apierrors.IsForbidden(err) {
		t.Errorf("get a tenant's ConfigMap: %v, want forbidden", err)
	}
	if err := c.List(ctx, &list, client.MatchingLabels{meshconfig.RevisionLabel: "canary"}); !apierrors.IsForbidden(err) {
		t.Errorf("list revisions' ConfigMaps everywhere: %v, want forbidden", err)
	}
	byName := client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", "istio")}
	if err := c.List(ctx, &list, byName); err != nil {
		t.Errorf("list the ConfigMaps named istio everywhere: %v", err)
	}
	w, err := c.Watch(ctx, &list, byName)
	if err != nil {
		t.Errorf("watch the ConfigMaps named istio everywhere: %v", err)
	} else {
		w.Stop()
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tenant", Name: "istio"}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("get tenant/istio: %v, want not found (allowed)", err)
	}
	hasRev, _ := labels.Parse(meshconfig.RevisionLabel)
	if err := c.List(ctx, &list, client.InNamespace("istio-system"), client.MatchingLabelsSelector{Selector: hasRev}); err != nil || len(list.Items) != 1 {
		t.Errorf("list the revisions' ConfigMaps in istio-system: %d, %v", len(list.Items), err)
	}

	// The config reconciler under the operator's identity.
	mgr, err := ctrl.NewManager(operator, ctrl.Options{
		Scheme:  env.Scheme,
		Client:  client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   cache.Options(),
	})
	if err != nil {
		t.Fatal(err)
	}
	shared := controllers.NewShared("")
	r := &controllers.ConfigReconciler{Client: mgr.GetClient(), Shared: shared, Recount: time.Hour, MeshConfigNamespaces: []string{"istio-system"}}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	mctx, stop := context.WithCancel(ctx)
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if st, ok := shared.Current(); ok && st.Mesh.TrustDomain == "canary.example" {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("manager stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			st, ok := shared.Current()
			t.Fatalf("trust domain %q (resolved %v), want the revision's canary.example from istio-system/istio-canary", st.Mesh.TrustDomain, ok)
		}
	}
}

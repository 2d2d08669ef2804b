package controllers_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/cache"
)

// startConfigReconciler runs a ConfigReconciler of its own that never recounts: a change it
// publishes can only come from one of its watches. It writes the same status as the suite's.
func startConfigReconciler(t *testing.T) *controllers.Shared {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:     env.Scheme,
		Client:     client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics:    metricsserver.Options{BindAddress: "0"},
		Cache:      cache.Options(),
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	shared := controllers.NewShared("")
	r := &controllers.ConfigReconciler{Client: mgr.GetClient(), Shared: shared, Recount: time.Hour}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return shared
}

// waitState polls the published state until check passes.
func waitState(t *testing.T, shared *controllers.Shared, what string, check func(controllers.State) error) {
	t.Helper()
	eventually(t, what, func() error {
		st, ok := shared.Current()
		if !ok {
			return fmt.Errorf("not resolved yet")
		}
		return check(st)
	})
}

// waitMeshStatus polls the SMI2IstioConfig's status until check passes.
func waitMeshStatus(t *testing.T, what string, check func(v1alpha1.SMI2IstioConfigStatus) error) {
	t.Helper()
	eventually(t, what, func() error {
		cfg := &v1alpha1.SMI2IstioConfig{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err != nil {
			return err
		}
		return check(cfg.Status)
	})
}

func labelNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, ns); apierrors.IsNotFound(err) {
		ns.Labels = labels
		if err := env.Client.Create(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
		return
	} else if err != nil {
		t.Fatal(err)
	}
	ns.Labels = labels
	if err := env.Client.Update(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
}

func setMeshConfig(t *testing.T, name, rev, mesh string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system"}}
	err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(cm), cm)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if rev != "" {
		cm.Labels = map[string]string{"istio.io/rev": rev}
	}
	cm.Data = map[string]string{"mesh": mesh}
	if apierrors.IsNotFound(err) {
		err = env.Client.Create(context.Background(), cm)
	} else {
		err = env.Client.Update(context.Background(), cm)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// A revision install (istio-canary, namespaces labelled istio.io/rev=canary, no ConfigMap "istio"):
// its trust domain, root namespace and discovery selectors are in effect, on the state and on the
// config's status; a change to it, or a default revision with another trust domain, re-resolves.
func TestMeshConfigOfRevision(t *testing.T) {
	ensureNamespace(t, "istio-system")
	shared := startConfigReconciler(t)
	labelNamespace(t, "mc-in", map[string]string{"istio.io/rev": "canary"})
	labelNamespace(t, "mc-out", map[string]string{"istio.io/rev": "canary"})
	t.Cleanup(func() {
		for _, name := range []string{"istio-canary", "istio"} {
			_ = env.Client.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system"}})
		}
		// Out of the mesh again; the trust domain back to the default for the other tests.
		labelNamespace(t, "mc-in", nil)
		labelNamespace(t, "mc-out", nil)
		waitMeshStatus(t, "trust domain back to cluster.local", func(s v1alpha1.SMI2IstioConfigStatus) error {
			if s.Mesh.TrustDomain != "cluster.local" {
				return fmt.Errorf("trust domain %q", s.Mesh.TrustDomain)
			}
			return nil
		})
	})
	// Every namespace but mc-out is discovered: the suite's other namespaces stay in the mesh.
	mesh := func(td string) string {
		return "trustDomain: " + td + "\nrootNamespace: mesh-root\ndiscoverySelectors:\n" +
			"- matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [mc-out]}]\n"
	}
	setMeshConfig(t, "istio-canary", "canary", mesh("canary.example"))
	waitState(t, shared, "state of istio-canary", func(st controllers.State) error {
		switch {
		case st.Mesh.TrustDomain != "canary.example":
			return fmt.Errorf("trust domain %q", st.Mesh.TrustDomain)
		case !reflect.DeepEqual(st.RootNamespaces, []string{"mesh-root"}):
			return fmt.Errorf("root namespaces %v", st.RootNamespaces)
		case !reflect.DeepEqual(st.MeshConfigs, []string{"istio-system/istio-canary"}):
			return fmt.Errorf("mesh configs %v", st.MeshConfigs)
		case !st.InMesh("mc-in") || st.InMesh("mc-out"):
			return fmt.Errorf("discovery selectors not applied: members %v", st.Members.Sorted())
		case st.SelectorOutputsAllowed("mesh-root") || !st.SelectorOutputsAllowed("mc-in"):
			return fmt.Errorf("SelectorOutputsAllowed: mesh-root %v, mc-in %v", st.SelectorOutputsAllowed("mesh-root"), st.SelectorOutputsAllowed("mc-in"))
		case st.MeshConflict != "":
			return fmt.Errorf("conflict %q", st.MeshConflict)
		}
		return nil
	})
	waitMeshStatus(t, "status of istio-canary", func(s v1alpha1.SMI2IstioConfigStatus) error {
		if s.Mesh.TrustDomain != "canary.example" || !reflect.DeepEqual(s.Mesh.RootNamespaces, []string{"mesh-root"}) ||
			!reflect.DeepEqual(s.Mesh.ConfigMaps, []string{"istio-system/istio-canary"}) {
			return fmt.Errorf("mesh %+v", s.Mesh)
		}
		return nil
	})

	// A change to the ConfigMap re-resolves (this reconciler never recounts: the watch brings it).
	setMeshConfig(t, "istio-canary", "canary", mesh("canary2.example"))
	waitState(t, shared, "state after the change", func(st controllers.State) error {
		if st.Mesh.TrustDomain != "canary2.example" {
			return fmt.Errorf("trust domain %q", st.Mesh.TrustDomain)
		}
		return nil
	})

	// The default revision appears with another trust domain: no guess, it is reported; the
	// default revision's is used, and both root namespaces count.
	setMeshConfig(t, "istio", "", "trustDomain: other.example\n")
	waitState(t, shared, "state with two revisions", func(st controllers.State) error {
		switch {
		case st.MeshConflict == "" || st.Mesh.TrustDomain != "other.example":
			return fmt.Errorf("trust domain %q, conflict %q", st.Mesh.TrustDomain, st.MeshConflict)
		case !reflect.DeepEqual(st.RootNamespaces, []string{"istio-system", "mesh-root"}):
			return fmt.Errorf("root namespaces %v", st.RootNamespaces)
		case st.SelectorOutputsAllowed("istio-system") || st.SelectorOutputsAllowed("mesh-root"):
			return fmt.Errorf("selector outputs allowed in a root namespace")
		}
		return nil
	})
	waitMeshStatus(t, "MeshDetected=False naming both ConfigMaps", func(s v1alpha1.SMI2IstioConfigStatus) error {
		c := meta.FindStatusCondition(s.Conditions, "MeshDetected")
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "MeshConfigsDisagree" ||
			!strings.Contains(c.Message, "istio-system/istio:") || !strings.Contains(c.Message, "istio-system/istio-canary:") {
			return fmt.Errorf("MeshDetected %+v", c)
		}
		return nil
	})
}

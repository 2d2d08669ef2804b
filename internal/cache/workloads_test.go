package cache

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/smi2istio/smi2istio/translate"
)

func pod(ns, name, sa string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

func deployment(ns, name, sa string, labels map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app"}}}},
		},
	}
}

func sorted(ws []translate.Workload) []translate.Workload {
	sort.Slice(ws, func(i, j int) bool { return ws[i].Name < ws[j].Name })
	return ws
}

func changed(t *testing.T, ix *WorkloadIndex) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := ix.Changed(ctx)
	if got == nil {
		t.Fatal("no namespace reported changed within 30s")
	}
	return got
}

// Against a real apiserver: objects listed at start (streamed in compact form) and watched after,
// identities shared between pods of a template, and changes reported only when a workload appears,
// goes, or changes ServiceAccount or stable labels.
func TestWorkloadIndex(t *testing.T) {
	env := controlPlane(t)
	cs := kubernetes.NewForConfigOrDie(env.Config)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{"shop", "other"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	web := map[string]string{"app": "web", "version": "v1"}
	if _, err := cs.AppsV1().Deployments("shop").Create(ctx, deployment("shop", "web", "web", web), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, hash := range []string{"aaa", "bbb"} {
		p := pod("shop", fmt.Sprintf("web-%d", i), "web", map[string]string{"app": "web", "version": "v1", "pod-template-hash": hash})
		if _, err := cs.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, pod("shop", "db", "", map[string]string{"app": "db"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ix := NewWorkloadIndex()
	second := ix.Subscribe()
	for range 2 { // started once
		ix.Start(ctx, env.Config, func(err error) { t.Error(err) })
	}
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if err := ix.WaitForSync(syncCtx); err != nil {
		t.Fatal(err)
	}

	want := []translate.Workload{
		{Name: "Deployment/web", ServiceAccount: "web", Labels: web},
		{Name: "Pod/db", ServiceAccount: "default", Labels: map[string]string{"app": "db"}},
		{Name: "Pod/web-0", ServiceAccount: "web", Labels: web},
		{Name: "Pod/web-1", ServiceAccount: "web", Labels: web},
	}
	got := sorted(ix.Workloads("shop"))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("workloads of shop:\n got %+v\nwant %+v", got, want)
	}
	// One identity, one labels map, for the template and both its pods.
	if p := reflect.ValueOf(got[0].Labels).Pointer(); reflect.ValueOf(got[2].Labels).Pointer() != p || reflect.ValueOf(got[3].Labels).Pointer() != p {
		t.Error("pods of one template do not share their identity")
	}
	if c := changed(t, ix); !reflect.DeepEqual(c, []string{"shop"}) {
		t.Errorf("changed after the initial list: %v", c)
	}

	// A status change and a new pod of an existing identity elsewhere: only the new one reports.
	db, err := cs.CoreV1().Pods("shop").Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db.Status.Phase = corev1.PodRunning
	if _, err := cs.CoreV1().Pods("shop").UpdateStatus(ctx, db, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("other").Create(ctx, pod("other", "web-9", "web", web), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := changed(t, ix); !reflect.DeepEqual(c, []string{"other"}) {
		t.Errorf("changed after a status update in shop and a pod created in other: %v", c)
	}

	// New stable labels are a change; a terminating pod is still a workload (it runs for its grace
	// period), until it is gone.
	db, err = cs.CoreV1().Pods("shop").Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db.Labels["tier"] = "data"
	db.Finalizers = []string{"example.com/hold"}
	if _, err := cs.CoreV1().Pods("shop").Update(ctx, db, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := changed(t, ix); !reflect.DeepEqual(c, []string{"shop"}) {
		t.Errorf("changed after a label change: %v", c)
	}
	if got := sorted(ix.Workloads("shop"))[1]; !reflect.DeepEqual(got.Labels, map[string]string{"app": "db", "tier": "data"}) {
		t.Errorf("db after the label change: %+v", got)
	}
	if err := cs.CoreV1().Pods("shop").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "db terminating", func() error {
		p, err := cs.CoreV1().Pods("shop").Get(ctx, "db", metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp == nil {
			return fmt.Errorf("db not terminating: %w", err)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // the watch has delivered the update
	listed := false
	for _, w := range ix.Workloads("shop") {
		listed = listed || w.Name == "Pod/db"
	}
	if !listed {
		t.Error("a terminating pod (still running) is no longer listed")
	}
	db, err = cs.CoreV1().Pods("shop").Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db.Finalizers = nil
	if _, err := cs.CoreV1().Pods("shop").Update(ctx, db, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := changed(t, ix); !reflect.DeepEqual(c, []string{"shop"}) {
		t.Errorf("changed after the pod went: %v", c)
	}
	for _, w := range ix.Workloads("shop") {
		if w.Name == "Pod/db" {
			t.Errorf("a pod that is gone is still listed: %+v", w)
		}
	}
	if err := cs.AppsV1().Deployments("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := changed(t, ix); !reflect.DeepEqual(c, []string{"shop"}) {
		t.Errorf("changed after the Deployment's deletion: %v", c)
	}
	if n := len(ix.Workloads("shop")); n != 2 {
		t.Errorf("shop has %d workloads after removing the Deployment and db, want the 2 web pods", n)
	}
	// A second consumer was told of every namespace changed since it subscribed.
	if c := second.Next(ctx); !reflect.DeepEqual(c, []string{"other", "shop"}) {
		t.Errorf("the second consumer's changes: %v", c)
	}

	// Pods that run Istio's sidecar (injected: annotated, or an istio-proxy container, native
	// sidecars included) are counted; a new sidecar is a change.
	if n := ix.Sidecars("shop"); n != 0 {
		t.Errorf("shop has %d sidecars before any was injected", n)
	}
	injected := pod("shop", "web-2", "web", web)
	injected.Annotations = map[string]string{"sidecar.istio.io/status": `{"containers":["istio-proxy"]}`}
	native := pod("shop", "web-3", "web", web)
	native.Spec.InitContainers = []corev1.Container{{Name: "istio-proxy", Image: "proxyv2"}}
	for _, p := range []*corev1.Pod{injected, native} {
		if _, err := cs.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "two sidecars in shop", func() error {
		if n := ix.Sidecars("shop"); n != 2 {
			return fmt.Errorf("%d sidecars", n)
		}
		return nil
	})
	if c := changed(t, ix); !reflect.DeepEqual(c, []string{"shop"}) {
		t.Errorf("changed after injected pods came: %v", c)
	}
	if n := ix.Sidecars("other"); n != 0 {
		t.Errorf("other has %d sidecars", n)
	}
}

// A relist replaces a kind's content: what is not listed again is gone, other kinds stay, and an
// identity nobody has any more is forgotten.
func TestWorkloadIndexReplace(t *testing.T) {
	ix := NewWorkloadIndex()
	pods := &workloadStore{ix: ix, kind: 3}
	deps := &workloadStore{ix: ix, kind: 0}
	if err := deps.Replace([]any{deployment("ns", "d", "sa", map[string]string{"app": "d"})}, "1"); err != nil {
		t.Fatal(err)
	}
	if err := pods.Replace([]any{pod("ns", "a", "sa", map[string]string{"app": "a"}), pod("ns", "b", "sb", map[string]string{"app": "b"})}, "1"); err != nil {
		t.Fatal(err)
	}
	compact, err := pods.Transformer()(pod("ns", "a", "sa", map[string]string{"app": "a", "pod-template-hash": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := pods.Replace([]any{compact}, "2"); err != nil {
		t.Fatal(err)
	}
	got := sorted(ix.Workloads("ns"))
	want := []translate.Workload{
		{Name: "Deployment/d", ServiceAccount: "sa", Labels: map[string]string{"app": "d"}},
		{Name: "Pod/a", ServiceAccount: "sa", Labels: map[string]string{"app": "a"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after the relist:\n got %+v\nwant %+v", got, want)
	}
	if len(ix.identities) != 2 {
		t.Errorf("identities kept: %d, want 2 (b's is gone)", len(ix.identities))
	}
	if ix.HasSynced() {
		t.Error("synced before StatefulSets and DaemonSets were listed")
	}
}

// While a watch streams the initial list, the reflector keeps what it received in a temporary
// store built with the index's transformer and keyed by namespace and name: the compacted form
// must give the key, and replacing the index from that store must give the workloads.
func TestCompactedInTheReflectorsStore(t *testing.T) {
	ix := NewWorkloadIndex()
	pods := &workloadStore{ix: ix, kind: 3}
	tmp := toolscache.NewStore(toolscache.DeletionHandlingMetaNamespaceKeyFunc, toolscache.WithTransformer(pods.Transformer()))
	for _, p := range []*corev1.Pod{
		pod("ns", "a", "", map[string]string{"app": "a", "pod-template-hash": "x"}),
		pod("ns", "b", "sb", map[string]string{"app": "a", "pod-template-hash": "y"}),
	} {
		if err := tmp.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	keys := tmp.ListKeys()
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, []string{"ns/a", "ns/b"}) {
		t.Fatalf("keys %v", keys)
	}
	for _, o := range tmp.List() {
		if _, ok := o.(*compacted); !ok {
			t.Fatalf("the store holds a %T", o)
		}
	}
	if err := pods.Replace(tmp.List(), "1"); err != nil {
		t.Fatal(err)
	}
	want := []translate.Workload{
		{Name: "Pod/a", ServiceAccount: "default", Labels: map[string]string{"app": "a"}},
		{Name: "Pod/b", ServiceAccount: "sb", Labels: map[string]string{"app": "a"}},
	}
	if got := sorted(ix.Workloads("ns")); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// BenchmarkCompactedRetained reports the heap a listed pod takes until the list is complete
// (retained-B/op): compacted, and as the metadata-only object this index used before, both as a
// first list meets them (no identity in the index yet). Run with -bench CompactedRetained
// -benchtime 50000x.
func BenchmarkCompactedRetained(b *testing.B) {
	ix := NewWorkloadIndex()
	for _, c := range []struct {
		name    string
		compact func(*corev1.Pod) any
	}{
		{"PartialObjectMetadata", func(p *corev1.Pod) any {
			return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name,
				Labels: translate.StableLabels(p.Labels), Annotations: map[string]string{"workloads.smi2istio.io/service-account": p.Spec.ServiceAccountName}}}
		}},
		{"compacted", func(p *corev1.Pod) any {
			c, err := ix.compact(p)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			in := make([]*corev1.Pod, b.N)
			for i := range in {
				in[i] = pod(fmt.Sprintf("ns-%d", i%400), fmt.Sprintf("svc-%d-v1-5d8f7c9b4-%05d", i%25, i), "sa",
					map[string]string{"app": fmt.Sprintf("svc-%d", i%25), "version": "v1", "pod-template-hash": fmt.Sprintf("%d", i)})
			}
			keep := make([]any, b.N)
			before := heapInUse()
			b.ResetTimer()
			for i := range b.N {
				keep[i] = c.compact(in[i])
			}
			b.StopTimer()
			b.ReportMetric(float64(heapInUse()-before)/float64(b.N), "retained-B/op")
			runtime.KeepAlive(keep)
			runtime.KeepAlive(in)
		})
	}
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

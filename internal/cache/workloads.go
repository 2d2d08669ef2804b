package cache

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/smi2istio/smi2istio/translate"
)

// workloadKinds are the kinds of workloads, indexed as the reflectors in Run and the namespace arrays are.
var workloadKinds = []string{"Deployment", "StatefulSet", "DaemonSet", "Pod"}

// identity is what selector resolution needs of a workload. Shared by every workload that has it:
// never modified once made.
type identity struct {
	serviceAccount string
	labels         map[string]string // stable labels only (translate.VolatileLabels dropped)
	sidecar        bool              // a pod that runs Istio's sidecar
	key            string
	refs           int
}

// workloadNamespace holds the workloads of one namespace: per kind, name -> identity.
type workloadNamespace [4]map[string]*identity

// WorkloadIndex keeps, per namespace, the ServiceAccount and stable labels of every pod and pod
// template (Deployment, StatefulSet, DaemonSet) — all that selector resolution reads of them — in a
// few bytes per pod, and tells which namespaces' workloads changed.
//
// It replaces four informer caches of typed objects: a cached Pod costs over a kilobyte of struct
// alone however much a transform blanks, and 50,000 pods dominated the operator's memory (see
// docs/benchmarks.md). Here a pod is a name in a map pointing at an identity (ServiceAccount and
// stable labels) shared with every pod of the same template.
type WorkloadIndex struct {
	mu         sync.RWMutex
	namespaces map[string]*workloadNamespace
	identities map[string]*identity
	// pending holds the labels of identities met while compacting a list, until the list is in.
	pending  map[string]map[string]string
	synced   [4]bool
	syncedCh chan struct{}

	// subs are told which namespaces changed (the first is Changed's).
	subs  []*Changes
	start sync.Once
}

// Changes reports the namespaces whose workloads changed to one consumer.
type Changes struct {
	ix *WorkloadIndex
	// dirty namespaces not yet reported; signal wakes the consumer.
	dirty  map[string]struct{}
	signal chan struct{}
}

// NewWorkloadIndex returns an empty index; Run fills it.
func NewWorkloadIndex() *WorkloadIndex {
	ix := &WorkloadIndex{
		namespaces: map[string]*workloadNamespace{},
		identities: map[string]*identity{},
		pending:    map[string]map[string]string{},
		syncedCh:   make(chan struct{}),
	}
	ix.Subscribe()
	return ix
}

// Subscribe returns a new consumer of the index's changes (every namespace changed from now on).
func (ix *WorkloadIndex) Subscribe() *Changes {
	c := &Changes{ix: ix, dirty: map[string]struct{}{}, signal: make(chan struct{}, 1)}
	ix.mu.Lock()
	ix.subs = append(ix.subs, c)
	ix.mu.Unlock()
	return c
}

// Start runs the index in the background once, however many consumers ask.
func (ix *WorkloadIndex) Start(ctx context.Context, cfg *rest.Config, onError func(error)) {
	ix.start.Do(func() {
		go func() {
			if err := ix.Run(ctx, cfg); err != nil {
				onError(err)
			}
		}()
	})
}

// Run watches the four kinds of workloads (protobuf, streamed initial lists) until ctx ends.
func (ix *WorkloadIndex) Run(ctx context.Context, cfg *rest.Config) error {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("workload index client: %w", err)
	}
	sources := []struct {
		getter   toolscache.Getter
		resource string
		obj      runtime.Object
	}{
		{cs.AppsV1().RESTClient(), "deployments", &appsv1.Deployment{}},
		{cs.AppsV1().RESTClient(), "statefulsets", &appsv1.StatefulSet{}},
		{cs.AppsV1().RESTClient(), "daemonsets", &appsv1.DaemonSet{}},
		{cs.CoreV1().RESTClient(), "pods", &corev1.Pod{}},
	}
	var wg sync.WaitGroup
	for i, s := range sources {
		lw := toolscache.NewListWatchFromClient(s.getter, s.resource, metav1.NamespaceAll, fields.Everything())
		compactLW := &toolscache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				return ix.compactList(ctx, lw.ListWithContextFunc, opts)
			},
			WatchFuncWithContext: lw.WatchFuncWithContext,
		}
		r := toolscache.NewReflectorWithOptions(compactLW, s.obj, &workloadStore{ix: ix, kind: i}, toolscache.ReflectorOptions{Name: "workloads/" + s.resource})
		wg.Go(func() { r.RunWithContext(ctx) })
	}
	wg.Wait()
	return nil
}

// compactList lists page by page and compacts each page's objects before asking for the next, so
// that listing never holds more than a page of full objects. Reflectors list when the apiserver
// cannot stream the initial list (watch-list needs etcd's progress notifications, which etcd 3.4
// lacks), and a list at resourceVersion "0" would otherwise come as one response of every pod.
func (ix *WorkloadIndex) compactList(ctx context.Context, list toolscache.ListWithContextFunc, opts metav1.ListOptions) (runtime.Object, error) {
	out := &metav1.List{}
	opts.Limit = listPageSize
	if opts.ResourceVersion == "0" {
		opts.ResourceVersion, opts.ResourceVersionMatch = "", "" // the watch cache ignores limits at "0"
	}
	for {
		page, err := list(ctx, opts)
		if err != nil {
			return nil, err
		}
		lm, err := meta.ListAccessor(page)
		if err != nil {
			return nil, err
		}
		if out.ResourceVersion == "" {
			out.ResourceVersion = lm.GetResourceVersion()
			if rest := lm.GetRemainingItemCount(); rest != nil && *rest > 0 && *rest < 1<<24 {
				out.Items = make([]runtime.RawExtension, 0, int64(meta.LenList(page))+*rest) // an estimate
			}
		}
		if err := meta.EachListItem(page, func(o runtime.Object) error {
			c, err := ix.compact(o)
			if err != nil {
				return err
			}
			out.Items = append(out.Items, runtime.RawExtension{Object: c.(runtime.Object)})
			return nil
		}); err != nil {
			return nil, err
		}
		if lm.GetContinue() == "" {
			return out, nil
		}
		opts.Continue, opts.ResourceVersion, opts.ResourceVersionMatch = lm.GetContinue(), "", ""
	}
}

// WaitForSync blocks until every kind has been listed once, or ctx ends.
func (ix *WorkloadIndex) WaitForSync(ctx context.Context) error {
	select {
	case <-ix.syncedCh:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("workload index not synced: %w", ctx.Err())
	}
}

// HasSynced reports whether every kind has been listed once.
func (ix *WorkloadIndex) HasSynced() bool {
	select {
	case <-ix.syncedCh:
		return true
	default:
		return false
	}
}

// Workloads lists the namespace's workloads (pods and pod templates), named "<Kind>/<name>".
func (ix *WorkloadIndex) Workloads(ns string) []translate.Workload {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n := ix.namespaces[ns]
	if n == nil {
		return nil
	}
	size := 0
	for _, m := range n {
		size += len(m)
	}
	out := make([]translate.Workload, 0, size)
	for k, m := range n {
		for name, id := range m {
			out = append(out, translate.Workload{Name: workloadKinds[k] + "/" + name, ServiceAccount: id.serviceAccount, Labels: id.labels})
		}
	}
	return out
}

// Changed waits for namespaces whose workloads changed (added, removed, or a new ServiceAccount,
// stable labels or sidecar) and returns them; nil when ctx ends. It is the first consumer's Next.
func (ix *WorkloadIndex) Changed(ctx context.Context) []string { return ix.subs[0].Next(ctx) }

// Next waits for namespaces changed since the last call and returns them; nil when ctx ends.
func (c *Changes) Next(ctx context.Context) []string {
	for {
		c.ix.mu.Lock()
		if len(c.dirty) > 0 {
			out := make([]string, 0, len(c.dirty))
			for ns := range c.dirty {
				out = append(out, ns)
			}
			clear(c.dirty)
			c.ix.mu.Unlock()
			sort.Strings(out)
			return out
		}
		c.ix.mu.Unlock()
		select {
		case <-c.signal:
		case <-ctx.Done():
			return nil
		}
	}
}

// markDirty tells every consumer; callers hold mu.
func (ix *WorkloadIndex) markDirty(ns string) {
	for _, c := range ix.subs {
		c.dirty[ns] = struct{}{}
		select {
		case c.signal <- struct{}{}:
		default:
		}
	}
}

// Sidecars counts the namespace's pods that run Istio's sidecar (injected: the
// sidecar.istio.io/status annotation or an istio-proxy container). Such pods keep enforcing
// the policies istiod gives them after their namespace leaves the mesh, until they restart.
func (ix *WorkloadIndex) Sidecars(ns string) int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n := ix.namespaces[ns]
	if n == nil {
		return 0
	}
	count := 0
	for _, id := range n[podKind] {
		if id.sidecar {
			count++
		}
	}
	return count
}

// podKind is the index of pods in workloadKinds.
const podKind = 3

// entry is one workload as the index records it.
type entry struct {
	namespace, name string
	serviceAccount  string
	labels          map[string]string
	sidecar         bool
	normal          bool // already normalized (a compacted entry)
}

// normalized is e as identities hold it: the ServiceAccount defaulted, the stable labels only.
func (e entry) normalized() entry {
	if e.normal {
		return e
	}
	if e.serviceAccount == "" {
		e.serviceAccount = "default"
	}
	e.labels = translate.StableLabels(e.labels)
	e.normal = true
	return e
}

// compacted is the form a workload takes between the apiserver and the index — a listed page, the
// reflector's temporary store while a watch streams the initial list: its key and identity in 64
// bytes (BenchmarkCompactedRetained), where a decoded Pod is kilobytes. Listing 50,000 pods
// holds every one of them in this form until the list is complete.
type compacted struct{ entry }

var (
	_ runtime.Object            = &compacted{}
	_ metav1.ObjectMetaAccessor = &compacted{}
)

func (*compacted) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject copies the entry; the labels are shared, as identities share them: never modified.
func (c *compacted) DeepCopyObject() runtime.Object { cp := *c; return &cp }

// GetObjectMeta gives key functions (toolscache.MetaNamespaceKeyFunc) the namespace and name.
func (c *compacted) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: c.namespace, Name: c.name}
}

// entryOf reads a workload from a typed object, its compacted form, or a tombstone.
func entryOf(obj any) (entry, bool) {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	var meta *metav1.ObjectMeta
	var tmpl *corev1.PodTemplateSpec
	switch o := obj.(type) {
	case *corev1.Pod:
		return entry{namespace: o.Namespace, name: o.Name, serviceAccount: o.Spec.ServiceAccountName, labels: o.Labels,
			sidecar: hasSidecar(o) && o.Status.Phase != corev1.PodSucceeded && o.Status.Phase != corev1.PodFailed}, true
	case *compacted:
		return o.entry, true
	case *appsv1.Deployment:
		meta, tmpl = &o.ObjectMeta, &o.Spec.Template
	case *appsv1.StatefulSet:
		meta, tmpl = &o.ObjectMeta, &o.Spec.Template
	case *appsv1.DaemonSet:
		meta, tmpl = &o.ObjectMeta, &o.Spec.Template
	default:
		return entry{}, false
	}
	return entry{namespace: meta.Namespace, name: meta.Name, serviceAccount: tmpl.Spec.ServiceAccountName, labels: tmpl.Labels}, true
}

// hasSidecar reports whether Istio injected its sidecar into the pod.
func hasSidecar(p *corev1.Pod) bool {
	if _, ok := p.Annotations["sidecar.istio.io/status"]; ok {
		return true
	}
	for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == "istio-proxy" {
				return true
			}
		}
	}
	return false
}

func identityKey(sa string, labels map[string]string, sidecar bool) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	if sidecar {
		b.WriteByte(1) // a ServiceAccount name never starts with one
	}
	b.WriteString(sa)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	return b.String()
}

// set records a workload; callers hold mu. A terminating one stays until it is gone: a pod runs,
// and its sidecar enforces what istiod gives it, for its whole grace period (selectors must stay
// precise against it, and it still counts as a sidecar).
func (ix *WorkloadIndex) set(kind int, e entry) {
	e = e.normalized()
	sa, labels := e.serviceAccount, e.labels
	key := identityKey(sa, labels, e.sidecar)
	n := ix.namespaces[e.namespace]
	if n == nil {
		n = &workloadNamespace{}
		ix.namespaces[e.namespace] = n
	}
	if n[kind] == nil {
		n[kind] = map[string]*identity{}
	}
	old := n[kind][e.name]
	if old != nil && old.key == key {
		return
	}
	id := ix.identities[key]
	if id == nil {
		id = &identity{serviceAccount: sa, labels: labels, sidecar: e.sidecar, key: key}
		ix.identities[key] = id
	}
	id.refs++
	if old != nil {
		ix.release(old)
	}
	n[kind][e.name] = id
	ix.markDirty(e.namespace)
}

// remove forgets a workload; callers hold mu.
func (ix *WorkloadIndex) remove(kind int, ns, name string) {
	n := ix.namespaces[ns]
	if n == nil || n[kind][name] == nil {
		return
	}
	ix.release(n[kind][name])
	delete(n[kind], name)
	if len(n[kind]) == 0 {
		n[kind] = nil
		if n[0] == nil && n[1] == nil && n[2] == nil && n[3] == nil {
			delete(ix.namespaces, ns)
		}
	}
	ix.markDirty(ns)
}

func (ix *WorkloadIndex) release(id *identity) {
	id.refs--
	if id.refs == 0 {
		delete(ix.identities, id.key)
	}
}

// compact turns a workload into its compacted form, its labels shared with others of the same
// identity: a known one, or one met earlier in lists not yet replaced into the index (pending).
func (ix *WorkloadIndex) compact(obj any) (any, error) {
	if _, already := obj.(*compacted); already {
		return obj, nil
	}
	e, ok := entryOf(obj)
	if !ok {
		return obj, nil
	}
	e = e.normalized()
	key := identityKey(e.serviceAccount, e.labels, e.sidecar)
	ix.mu.Lock()
	if id := ix.identities[key]; id != nil {
		e.labels = id.labels
	} else if l, ok := ix.pending[key]; ok {
		e.labels = l
	} else {
		ix.pending[key] = e.labels
	}
	ix.mu.Unlock()
	return &compacted{e}, nil
}

// workloadStore is the reflector's store for one kind: it writes through to the index.
type workloadStore struct {
	ix   *WorkloadIndex
	kind int
}

var _ toolscache.TransformingStore = &workloadStore{}

func (s *workloadStore) Add(obj any) error                     { return s.Update(obj) }
func (s *workloadStore) Resync() error                         { return nil }
func (s *workloadStore) Transformer() toolscache.TransformFunc { return s.ix.compact }

func (s *workloadStore) Update(obj any) error {
	e, ok := entryOf(obj)
	if !ok {
		return fmt.Errorf("workload index: unexpected %T", obj)
	}
	s.ix.mu.Lock()
	defer s.ix.mu.Unlock()
	s.ix.set(s.kind, e)
	return nil
}

func (s *workloadStore) Delete(obj any) error {
	e, ok := entryOf(obj)
	if !ok {
		return fmt.Errorf("workload index: unexpected %T", obj)
	}
	s.ix.mu.Lock()
	defer s.ix.mu.Unlock()
	s.ix.remove(s.kind, e.namespace, e.name)
	return nil
}

// Replace makes the kind's content exactly list (a fresh list or relist).
func (s *workloadStore) Replace(list []any, _ string) error {
	for _, obj := range list { // all or nothing
		if _, ok := entryOf(obj); !ok {
			return fmt.Errorf("workload index: unexpected %T", obj)
		}
	}
	s.ix.mu.Lock()
	defer s.ix.mu.Unlock()
	present := map[string]map[string]bool{}
	for _, obj := range list {
		e, _ := entryOf(obj)
		if present[e.namespace] == nil {
			present[e.namespace] = map[string]bool{}
		}
		present[e.namespace][e.name] = true
		s.ix.set(s.kind, e)
	}
	for ns, n := range s.ix.namespaces {
		for name := range n[s.kind] {
			if !present[ns][name] {
				s.ix.remove(s.kind, ns, name)
			}
		}
	}
	clear(s.ix.pending) // what another kind's list still compacts is shared no longer, nothing more
	if !s.ix.synced[s.kind] {
		s.ix.synced[s.kind] = true
		if s.ix.synced[0] && s.ix.synced[1] && s.ix.synced[2] && s.ix.synced[3] {
			close(s.ix.syncedCh)
		}
	}
	return nil
}

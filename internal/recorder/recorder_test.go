package recorder

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	"github.com/smi2istio/smi2istio/internal/localcp"
)

// Against a real apiserver: a queued Event is written with its reference, reason, type, note and
// reporting controller; a note over the apiserver's limit is cut, not refused.
func TestWritesEvents(t *testing.T) {
	cp, err := localcp.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cp.Stop() }()
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "bookstore"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 14001}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := New(cs.EventsV1(), clientgoscheme.Scheme, "smi2istio", 10, logr.Discard())
	go func() { _ = r.Start(ctx) }()
	r.Eventf(svc, nil, corev1.EventTypeWarning, "Conflict", "Reconcile", "taken by %s", "someone")
	r.Eventf(svc, nil, corev1.EventTypeNormal, "Applied", "Reconcile", "%s", strings.Repeat("x", 2000))

	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		byReason := map[string]int{}
		for i, ev := range list.Items {
			byReason[ev.Reason] = i
		}
		ci, conflict := byReason["Conflict"]
		ai, applied := byReason["Applied"]
		if conflict && applied {
			c, a := list.Items[ci], list.Items[ai]
			if c.Regarding.Kind != "Service" || c.Regarding.Name != "bookstore" || c.Regarding.UID != svc.UID ||
				c.Type != corev1.EventTypeWarning || c.Note != "taken by someone" || c.ReportingController != "smi2istio" || c.Action != "Reconcile" {
				t.Errorf("event %+v", c)
			}
			if len(a.Note) != noteMax || !strings.HasSuffix(a.Note, "...") {
				t.Errorf("long note written with %d characters", len(a.Note))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events not written within 30s: %v", byReason)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A full queue drops and counts instead of blocking the caller; an object the scheme does not know
// is not recorded.
func TestFullQueueDrops(t *testing.T) {
	r := New(nil, clientgoscheme.Scheme, "smi2istio", 1, logr.Discard())
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "n"}}
	before := testutil.ToFloat64(Dropped)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			r.Eventf(svc, nil, corev1.EventTypeNormal, "Applied", "Reconcile", "ok")
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Eventf blocked on a full queue")
	}
	if got := testutil.ToFloat64(Dropped) - before; got != 2 {
		t.Errorf("dropped %v events, want 2", got)
	}
	type unknown struct{ corev1.Service }
	r.Eventf(&unknown{}, nil, corev1.EventTypeNormal, "Applied", "Reconcile", "ok")
	if got := testutil.ToFloat64(Dropped) - before; got != 2 || len(r.queue) != 1 {
		t.Errorf("an unreferenceable object was queued or dropped (%v dropped, %d queued)", got, len(r.queue))
	}
}

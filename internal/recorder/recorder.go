// Package recorder writes Kubernetes Events (events.k8s.io/v1) from a bounded queue, without the
// series cache of client-go's event broadcaster.
//
// The operator emits an Event only when an object's Ready condition changes (DESIGN §7), so
// client-go's aggregation of repeated Events into series never applies; its broadcaster still keeps
// a copy of every Event for six minutes to detect them, and starts a goroutine per Event. With
// 10,000 SMI objects converging that held 13 MiB (docs/benchmarks.md). Here an Event lives until a
// worker has written it; when the queue is full, Events are dropped and counted, never blocking a
// reconcile.
package recorder

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	eventsclient "k8s.io/client-go/kubernetes/typed/events/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/tools/reference"
)

// Dropped is smi2istio_events_dropped_total: Events not written because the queue was full.
var Dropped = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "smi2istio_events_dropped_total",
	Help: "Events not written because the queue of Events to write was full.",
})

// noteMax is the longest note the apiserver accepts (events.k8s.io/v1 validation).
const noteMax = 1024

// Recorder is an events.EventRecorder writing through a few workers (Start).
type Recorder struct {
	client     eventsclient.EventsGetter
	scheme     *runtime.Scheme
	controller string
	instance   string
	log        logr.Logger
	queue      chan *eventsv1.Event
	now        func() time.Time
}

var _ events.EventRecorder = (*Recorder)(nil)

// New is a Recorder reporting as controller; queue Events wait at most to be written.
func New(client eventsclient.EventsGetter, scheme *runtime.Scheme, controller string, queue int, log logr.Logger) *Recorder {
	host, _ := os.Hostname()
	return &Recorder{client: client, scheme: scheme, controller: controller, instance: controller + "-" + host,
		log: log, queue: make(chan *eventsv1.Event, queue), now: time.Now}
}

// Eventf queues an Event about regarding; it never blocks.
func (r *Recorder) Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	ev, err := r.event(regarding, related, eventtype, reason, action, fmt.Sprintf(note, args...))
	if err != nil {
		r.log.Error(err, "event not recorded", "reason", reason)
		return
	}
	select {
	case r.queue <- ev:
	default:
		Dropped.Inc()
		r.log.V(1).Info("event queue full: event dropped", "object", ev.Regarding.Namespace+"/"+ev.Regarding.Name, "reason", reason)
	}
}

func (r *Recorder) event(regarding, related runtime.Object, eventtype, reason, action, note string) (*eventsv1.Event, error) {
	ref, err := reference.GetReference(r.scheme, regarding)
	if err != nil {
		return nil, fmt.Errorf("reference the object of a %s event: %w", reason, err)
	}
	var rel *corev1.ObjectReference
	if related != nil {
		if rel, err = reference.GetReference(r.scheme, related); err != nil {
			return nil, fmt.Errorf("reference the related object of a %s event: %w", reason, err)
		}
	}
	if len(note) > noteMax {
		note = note[:noteMax-3] + "..."
	}
	now := r.now()
	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()), Namespace: ns},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.controller,
		ReportingInstance:   r.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Related:             rel,
		Note:                note,
		Type:                eventtype,
	}, nil
}

// NeedLeaderElection is false: Events queued by a reconcile are written even if leadership ends.
func (r *Recorder) NeedLeaderElection() bool { return false }

// Start writes queued Events with workers until ctx ends (a manager Runnable).
func (r *Recorder) Start(ctx context.Context) error {
	const workers = 2
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-r.queue:
					r.write(ctx, ev)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

func (r *Recorder) write(ctx context.Context, ev *eventsv1.Event) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := r.client.Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		r.log.Error(err, "write event", "object", ev.Regarding.Namespace+"/"+ev.Regarding.Name, "reason", ev.Reason)
	}
}

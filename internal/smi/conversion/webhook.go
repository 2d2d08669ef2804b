package conversion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// MaxObjectBytes is the largest object the apiserver can send: an object comes from a request
// body, which kube-apiserver limits to 3 MiB (--max-request-body-bytes), or from etcd (1.5 MiB).
// MaxReviewBytes adds room for the ConversionReview around it.
const (
	MaxObjectBytes = 3 << 20
	MaxReviewBytes = MaxObjectBytes + 64<<10
)

// Conversions counts the objects the webhook converted, by the apiVersion they came in and the one
// asked for (register it where metrics are served). On the operator's own hot path there are none:
// it reads every SMI kind in its stored version.
var Conversions = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "smi2istio_conversions_total",
	Help: "SMI objects converted by the conversion webhook, by source and desired apiVersion.",
}, []string{"from", "to"})

// Refused counts the ConversionReviews the webhook refused before converting, by reason: too_large
// (HTTP 413), busy (429: every slot taken and the queue full, or no slot within Limits.Wait),
// bad_request (400). Register it next to Conversions.
var Refused = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "smi2istio_conversion_reviews_refused_total",
	Help: "ConversionReviews the conversion webhook refused before converting, by reason (too_large, busy, bad_request).",
}, []string{"reason"})

// Limits bound what the webhook holds at once: at most Concurrent reviews are read and converted
// together, each at most MaxBodyBytes (and each object in it decoded only as far as the conversion
// looks, tree.go); up to Queued more wait for a slot for at most Wait; beyond that a review is
// refused with 429 before its body is read, and the apiserver fails that conversion (its client
// retries).
type Limits struct {
	MaxBodyBytes int64
	Concurrent   int
	Queued       int
	Wait         time.Duration
	// ReadTimeout bounds reading a body once a slot is taken, and twice that writing the answer (a
	// slow client cannot hold a slot).
	ReadTimeout time.Duration
}

// DefaultLimits: a conversion of a typical object takes well under a millisecond, so two slots
// convert thousands of objects a second; the heap they hold is a few times MaxBodyBytes at most.
func DefaultLimits() Limits {
	return Limits{MaxBodyBytes: MaxReviewBytes, Concurrent: 2, Queued: 32, Wait: 10 * time.Second, ReadTimeout: 10 * time.Second}
}

// Handler serves apiextensions.k8s.io/v1 ConversionReviews for the SMI CRDs within DefaultLimits.
func Handler(log logr.Logger) http.Handler { return NewHandler(log, DefaultLimits()) }

// NewHandler serves ConversionReviews within these limits.
func NewHandler(log logr.Logger, l Limits) http.Handler {
	h := &handler{log: log, limits: l, slots: make(chan struct{}, max(l.Concurrent, 1)), queue: make(chan struct{}, max(l.Concurrent, 1)+max(l.Queued, 0))}
	return h
}

type handler struct {
	log    logr.Logger
	limits Limits
	// queue holds a token for every review admitted (converting or waiting); slots one for every
	// review converting.
	queue, slots chan struct{}
}

func (h *handler) refuse(w http.ResponseWriter, code int, reason, msg string) {
	Refused.WithLabelValues(reason).Inc()
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, msg, code)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "conversion webhook accepts POST only", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > h.limits.MaxBodyBytes {
		h.refuse(w, http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("ConversionReview of %d bytes: the limit is %d", r.ContentLength, h.limits.MaxBodyBytes))
		return
	}
	select {
	case h.queue <- struct{}{}:
		defer func() { <-h.queue }()
	default:
		h.refuse(w, http.StatusTooManyRequests, "busy", "conversion webhook busy: too many ConversionReviews waiting")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.limits.Wait)
	defer cancel()
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	case <-ctx.Done():
		h.refuse(w, http.StatusTooManyRequests, "busy", "conversion webhook busy: no slot free in "+h.limits.Wait.String())
		return
	}
	if h.limits.ReadTimeout > 0 {
		// A slow client holds no slot for long (reading the body, or the answer). Not every
		// ResponseWriter supports deadlines (httptest's recorder does not): then there are none.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(h.limits.ReadTimeout))
		_ = rc.SetWriteDeadline(time.Now().Add(2 * h.limits.ReadTimeout))
	}
	review, ok := h.readReview(w, r)
	if !ok {
		return
	}
	req := review.Request
	converted, result := convertAll(req)
	if result.Status != metav1.StatusSuccess {
		h.log.Error(nil, "conversion failed", "uid", req.UID, "desiredAPIVersion", req.DesiredAPIVersion, "message", result.Message)
	}
	w.Header().Set("Content-Type", "application/json")
	if err := writeReview(w, review.TypeMeta, req.UID, result, converted); err != nil {
		h.log.Error(err, "write ConversionReview response")
	}
}

// readReview reads and decodes the ConversionReview (the body is let go once its objects are
// copied out); on failure it has answered the request.
func (h *handler) readReview(w http.ResponseWriter, r *http.Request) (*apiextv1.ConversionReview, bool) {
	limit := h.limits.MaxBodyBytes
	body := http.MaxBytesReader(w, r.Body, limit)
	var data []byte
	var err error
	if r.ContentLength >= 0 {
		data = make([]byte, r.ContentLength)
		_, err = io.ReadFull(body, data)
	} else {
		data, err = io.ReadAll(body)
	}
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		h.refuse(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("ConversionReview larger than %d bytes", limit))
		return nil, false
	}
	if err != nil {
		h.refuse(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("read ConversionReview: %v", err))
		return nil, false
	}
	review := &apiextv1.ConversionReview{}
	if err := json.Unmarshal(data, review); err != nil {
		h.refuse(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("decode ConversionReview: %v", err))
		return nil, false
	}
	if review.Request == nil {
		h.refuse(w, http.StatusBadRequest, "bad_request", "ConversionReview has no request")
		return nil, false
	}
	return review, true
}

// Review converts every object of a ConversionRequest; one failure fails the whole request, as the
// apiserver requires.
func Review(req *apiextv1.ConversionRequest) *apiextv1.ConversionResponse {
	resp := &apiextv1.ConversionResponse{UID: req.UID}
	trees, result := convertAll(req)
	resp.Result = result
	if result.Status != metav1.StatusSuccess {
		return resp
	}
	resp.ConvertedObjects = make([]runtime.RawExtension, 0, len(trees))
	for _, t := range trees {
		out, err := appendJSON(nil, t)
		if err != nil {
			resp.Result = metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}
			resp.ConvertedObjects = nil
			return resp
		}
		resp.ConvertedObjects = append(resp.ConvertedObjects, runtime.RawExtension{Raw: out})
	}
	return resp
}

func convertAll(req *apiextv1.ConversionRequest) ([]object, metav1.Status) {
	converted := make([]object, 0, len(req.Objects))
	for i, o := range req.Objects {
		if len(o.Raw) > MaxObjectBytes {
			return nil, metav1.Status{Status: metav1.StatusFailure,
				Message: fmt.Sprintf("object %d is %d bytes: the limit is %d", i, len(o.Raw), MaxObjectBytes)}
		}
		out, from, err := convertTree(o.Raw, req.DesiredAPIVersion)
		if err != nil {
			return nil, metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}
		}
		converted = append(converted, out)
		Conversions.WithLabelValues(from, req.DesiredAPIVersion).Inc()
	}
	return converted, metav1.Status{Status: metav1.StatusSuccess}
}

// writeReview streams the response: the converted objects are written from their trees (raw parts
// straight from the request's bytes), never held whole as JSON.
func writeReview(w io.Writer, tm metav1.TypeMeta, uid any, result metav1.Status, objects []object) error {
	if tm.APIVersion == "" {
		tm = metav1.TypeMeta{APIVersion: apiextv1.SchemeGroupVersion.String(), Kind: "ConversionReview"}
	}
	head, err := json.Marshal(struct {
		metav1.TypeMeta
		Response struct {
			UID    any           `json:"uid"`
			Result metav1.Status `json:"result"`
		} `json:"response"`
	}{TypeMeta: tm, Response: struct {
		UID    any           `json:"uid"`
		Result metav1.Status `json:"result"`
	}{UID: uid, Result: result}})
	if err != nil {
		return fmt.Errorf("encode ConversionReview: %w", err)
	}
	e := newEncoder(w)
	defer e.release()
	// head ends with "}}": open convertedObjects inside the response object.
	e.b = append(e.b, head[:len(head)-2]...)
	if result.Status == metav1.StatusSuccess {
		e.b = append(e.b, `,"convertedObjects":[`...)
		for i, o := range objects {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			if err := e.value(o); err != nil {
				return err
			}
		}
		e.b = append(e.b, ']')
	}
	e.b = append(e.b, "}}\n"...)
	return e.flush()
}

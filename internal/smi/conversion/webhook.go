package conversion

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// maxReviewBytes bounds a ConversionReview body (the apiserver sends at most a page of a list).
const maxReviewBytes = 64 << 20

// Conversions counts the objects the webhook converted, by the apiVersion they came in and the one
// asked for (register it where metrics are served). On the operator's own hot path there are none:
// it reads every SMI kind in its stored version.
var Conversions = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "smi2istio_conversions_total",
	Help: "SMI objects converted by the conversion webhook, by source and desired apiVersion.",
}, []string{"from", "to"})

// Handler serves apiextensions.k8s.io/v1 ConversionReviews for the SMI CRDs.
func Handler(log logr.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "conversion webhook accepts POST only", http.StatusMethodNotAllowed)
			return
		}
		var review apiextv1.ConversionReview
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReviewBytes)).Decode(&review); err != nil {
			http.Error(w, fmt.Sprintf("decode ConversionReview: %v", err), http.StatusBadRequest)
			return
		}
		if review.Request == nil {
			http.Error(w, "ConversionReview has no request", http.StatusBadRequest)
			return
		}
		review.Response = Review(review.Request)
		if review.Response.Result.Status != metav1.StatusSuccess {
			log.Error(nil, "conversion failed", "uid", review.Request.UID, "desiredAPIVersion",
				review.Request.DesiredAPIVersion, "message", review.Response.Result.Message)
		}
		review.Request = nil
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(&review); err != nil {
			log.Error(err, "write ConversionReview response")
		}
	})
}

// Review converts every object of a ConversionRequest; one failure fails the whole request, as the
// apiserver requires.
func Review(req *apiextv1.ConversionRequest) *apiextv1.ConversionResponse {
	resp := &apiextv1.ConversionResponse{UID: req.UID}
	converted := make([]runtime.RawExtension, 0, len(req.Objects))
	for _, o := range req.Objects {
		out, from, err := convert(o.Raw, req.DesiredAPIVersion)
		if err != nil {
			resp.Result = metav1.Status{Status: metav1.StatusFailure, Message: err.Error()}
			return resp
		}
		converted = append(converted, runtime.RawExtension{Raw: out})
		Conversions.WithLabelValues(from, req.DesiredAPIVersion).Inc()
	}
	resp.ConvertedObjects = converted
	resp.Result = metav1.Status{Status: metav1.StatusSuccess}
	return resp
}

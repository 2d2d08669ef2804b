package foreigncrds_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/controllers"
)

// The versions watched are chosen once per process: while the SMI CRDs serve what was chosen the
// watch runs on; once they change (here a UDPRoute CRD appears, absent at start-up) it stops the
// process with ErrSMICRDsChanged, so that it starts again with the new choice.
func TestSMICRDWatchStopsOnAChange(t *testing.T) {
	watch := &controllers.SMICRDWatch{Reader: c, Mode: controllers.SMICRDsForeign, Choice: choice, Interval: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := watch.Start(ctx); err != nil {
		t.Fatalf("nothing changed: %v", err)
	}

	udp := &apiextv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "udproutes.specs.smi-spec.io"},
		Spec: apiextv1.CustomResourceDefinitionSpec{
			Group: "specs.smi-spec.io", Scope: apiextv1.NamespaceScoped,
			Names: apiextv1.CustomResourceDefinitionNames{Kind: "UDPRoute", ListKind: "UDPRouteList", Plural: "udproutes", Singular: "udproute"},
			Versions: []apiextv1.CustomResourceDefinitionVersion{{Name: "v1alpha4", Served: true, Storage: true,
				Schema: &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &apiextv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptrTo(true)}}}},
		},
	}
	must(t, c.Create(context.Background(), udp))
	// The other tests read the CRDs as at start-up: wait until this one is gone (a CRD's deletion
	// is asynchronous, its finalizer removes the instances first).
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), udp)
		deadline := time.Now().Add(30 * time.Second)
		for !apierrors.IsNotFound(c.Get(context.Background(), client.ObjectKeyFromObject(udp), &apiextv1.CustomResourceDefinition{})) {
			if time.Now().After(deadline) {
				t.Errorf("the UDPRoute CRD is still there 30s after its deletion")
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	err := watch.Start(ctx2)
	if !errors.Is(err, controllers.ErrSMICRDsChanged) || !strings.Contains(err.Error(), "UDPRoute") {
		t.Fatalf("a UDPRoute CRD appeared: %v, want ErrSMICRDsChanged naming UDPRoute", err)
	}
}

package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
)

// setStorageMigration writes status.storageMigration alone, as the storage migration does.
func setStorageMigration(t *testing.T, entries []v1alpha1.StorageMigration) {
	t.Helper()
	patch := []byte(`{"status":{"storageMigration":null}}`)
	if entries != nil {
		b, err := json.Marshal(map[string]any{"status": map[string]any{"storageMigration": entries}})
		must(t, err)
		patch = b
	}
	cfg := configObject(t)
	must(t, env.Client.Status().Patch(context.Background(), cfg, client.RawPatch(types.MergePatchType, patch)))
}

// The config reconciler's status writes keep status.storageMigration, which only the storage
// migration writes (here nothing writes it again: the suite runs no storage migration).
func TestConfigStatusKeepsStorageMigration(t *testing.T) {
	want := []v1alpha1.StorageMigration{{Name: "trafficsplits.split.smi-spec.io", StoredVersions: []string{"v1alpha4"},
		State: v1alpha1.MigrationDone, Message: "every object is stored in v1alpha4: 1 object(s) rewritten, v1alpha2 removed from status.storedVersions"}}
	setStorageMigration(t, want)
	t.Cleanup(func() { setStorageMigration(t, nil) })
	// A new mesh namespace: the config reconciler writes status.members.
	ns := freshNamespace(t)
	waitMeshStatus(t, "the config reconciler's status write", func(s v1alpha1.SMI2IstioConfigStatus) error {
		if !slices.Contains(s.Members, ns) {
			return fmt.Errorf("members %v", s.Members)
		}
		return nil
	})
	if got := configObject(t).Status.StorageMigration; !reflect.DeepEqual(got, want) {
		t.Errorf("status.storageMigration after the config reconciler's write: %+v, want %+v", got, want)
	}
}

// CRDs that are not smi2istio's, absent, or not readable are reported Skipped and left alone;
// smi2istio's with a single stored version is Done without a write to any object.
func TestStorageMigrationSkipsWhatIsNotItsOwn(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(func() { setStorageMigration(t, nil) })
	const foreign = "servicemeshmemberrolls.maistra.io" // installed by the suite, not smi2istio's
	before := &apiextv1.CustomResourceDefinition{}
	must(t, env.Client.Get(ctx, client.ObjectKey{Name: foreign}, before))
	r := &controllers.StorageMigrationReconciler{Client: env.Client, Reader: env.Client, Recheck: 7 * time.Minute,
		CRDs: []string{"trafficsplits.split.smi-spec.io", foreign, "nothing.split.smi-spec.io"}}
	res, err := r.Reconcile(ctx, reconcile.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 7*time.Minute {
		t.Errorf("nothing to do: looked at again after %s, want Recheck", res.RequeueAfter)
	}
	got := configObject(t).Status.StorageMigration
	want := []struct {
		state v1alpha1.StorageMigrationState
		says  string
	}{{v1alpha1.MigrationDone, "every object is stored in v1alpha4"}, {v1alpha1.MigrationSkipped, "not smi2istio's CRD"}, {v1alpha1.MigrationSkipped, "not installed"}}
	if len(got) != len(want) {
		t.Fatalf("status.storageMigration %+v", got)
	}
	for i, w := range want {
		if got[i].Name != r.CRDs[i] || got[i].State != w.state || !strings.Contains(got[i].Message, w.says) {
			t.Errorf("%s: %+v, want %s saying %q", r.CRDs[i], got[i], w.state, w.says)
		}
	}
	after := &apiextv1.CustomResourceDefinition{}
	must(t, env.Client.Get(ctx, client.ObjectKey{Name: foreign}, after))
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("the foreign CRD was written: resourceVersion %s -> %s", before.ResourceVersion, after.ResourceVersion)
	}

	// Without the right to read CRDs (an install whose RBAC leaves them out): Skipped, nothing fails.
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "no-rbac"}
	denied, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	must(t, err)
	r = &controllers.StorageMigrationReconciler{Client: env.Client, Reader: denied, CRDs: []string{"trafficsplits.split.smi-spec.io"}}
	if _, err := r.Reconcile(ctx, reconcile.Request{}); err != nil {
		t.Fatal(err)
	}
	got = configObject(t).Status.StorageMigration
	if len(got) != 1 || got[0].State != v1alpha1.MigrationSkipped || !strings.Contains(got[0].Message, "not permitted") {
		t.Errorf("CRDs not readable: %+v", got)
	}
}

package crds

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/manifests"
)

// FieldManager is the server-side apply field manager for CRDs the operator installs or patches.
const FieldManager = "smi2istio-crds"

// Load reads CRD manifests (one CRD per file, as written by hack/crdgen) from dir.
func Load(dir string) ([]*apiextv1.CustomResourceDefinition, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("list CRD manifests in %s: %w", dir, err)
	}
	sort.Strings(files)
	var out []*apiextv1.CustomResourceDefinition
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read CRD manifest: %w", err)
		}
		c := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, c); err != nil {
			return nil, fmt.Errorf("decode CRD manifest %s: %w", f, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CRD manifests in %s", dir)
	}
	return out, nil
}

// LoadFile reads a multi-document file of CRDs (e.g. Istio's crd-all.gen.yaml); other kinds are skipped.
func LoadFile(path string) ([]*apiextv1.CustomResourceDefinition, error) {
	objs, err := manifests.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*apiextv1.CustomResourceDefinition
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		c := &apiextv1.CustomResourceDefinition{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, c); err != nil {
			return nil, fmt.Errorf("decode CRD %s in %s: %w", o.GetName(), path, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// WithClientConfig returns copies of the CRDs whose conversion webhook uses cfg.
func WithClientConfig(in []*apiextv1.CustomResourceDefinition, cfg apiextv1.WebhookClientConfig) []*apiextv1.CustomResourceDefinition {
	out := make([]*apiextv1.CustomResourceDefinition, 0, len(in))
	for _, c := range in {
		c = c.DeepCopy()
		if c.Spec.Conversion != nil && c.Spec.Conversion.Webhook != nil {
			c.Spec.Conversion.Webhook.ClientConfig = cfg.DeepCopy()
		}
		out = append(out, c)
	}
	return out
}

// Install applies the CRDs server-side and waits until the apiserver serves them.
func Install(ctx context.Context, c client.Client, list []*apiextv1.CustomResourceDefinition) error {
	for _, crd := range list {
		crd = crd.DeepCopy()
		crd.SetManagedFields(nil)
		crd.SetResourceVersion("")
		//nolint:staticcheck // client.Apply with a typed object is the documented way to SSA a built-in kind.
		if err := c.Patch(ctx, crd, client.Apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply CRD %s: %w", crd.Name, err)
		}
	}
	for _, crd := range list {
		if err := waitEstablished(ctx, c, crd.Name); err != nil {
			return err
		}
	}
	return nil
}

// SetCABundle needs to patch the SMI CRDs, and only those.
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get;patch,resourceNames=trafficsplits.split.smi-spec.io;traffictargets.access.smi-spec.io;httproutegroups.specs.smi-spec.io;tcproutes.specs.smi-spec.io

// Labels smi2istio's CRDs carry (crd()); a CRD without part-of=smi2istio is someone else's.
const (
	PartOfLabel = "app.kubernetes.io/part-of"
	PartOfValue = "smi2istio"
)

// Ours reports whether a CRD is smi2istio's own (labelled by crd()): another installer's (Open
// Service Mesh's, kept with --smi-crds=foreign) is never written.
func Ours(c *apiextv1.CustomResourceDefinition) bool {
	return c.Labels[PartOfLabel] == PartOfValue
}

// SetCABundle points the conversion webhook of every installed multi-version SMI CRD that is
// smi2istio's own at caBundle (self-signed mode in a cluster; OLM does this itself when it installs
// the operator). Another installer's CRD, or a missing one, is left alone; the patch is made on the
// CRD as read (its resourceVersion), so a CRD replaced in between is not patched either.
func SetCABundle(ctx context.Context, c client.Client, caBundle []byte) error {
	for _, want := range All() {
		if want.Spec.Conversion == nil || want.Spec.Conversion.Webhook == nil {
			continue
		}
		crd := &apiextv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: want.Name}, crd); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return fmt.Errorf("read CRD %s: %w", want.Name, err)
		}
		if !Ours(crd) {
			continue
		}
		// caBundle is []byte in the API: JSON carries it base64-encoded.
		patch := fmt.Appendf(nil, `{"metadata":{"resourceVersion":%q},"spec":{"conversion":{"webhook":{"clientConfig":{"caBundle":%q}}}}}`,
			crd.ResourceVersion, base64.StdEncoding.EncodeToString(caBundle))
		if err := c.Patch(ctx, crd, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("set caBundle on CRD %s: %w", want.Name, err)
		}
	}
	return nil
}

func waitEstablished(ctx context.Context, c client.Client, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		crd := &apiextv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return false, nil //nolint:nilerr // not visible yet: keep polling
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("wait for CRD %s to be established: %w", name, err)
	}
	return nil
}

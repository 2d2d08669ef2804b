package olm

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// What OLM puts on the CRDs an InstallPlan creates or updates.
const (
	// ManagedLabel is OLM's olm.managed=true (install.OLMManagedLabelKey).
	ManagedLabel = "olm.managed"
	// AlongsidePrefix starts the annotation naming the CSV a CRD was installed alongside
	// (operatorframework.io/installed-alongside-<fnv64a of namespace/name, hex>: namespace/name).
	AlongsidePrefix = "operatorframework.io/installed-alongside-"
)

// ErrDataLoss: OLM refuses to update a CRD whose new spec drops a version listed in the existing
// CRD's status.storedVersions (crdlib.SafeStorageVersionUpgrade).
var ErrDataLoss = errors.New("risk of data loss")

// ErrTooRestrictive: an existing object of a version the old and the new CRD both serve does not
// validate against the new schema of that version, and the new CRD converts without a webhook
// (validateV1CRDCompatibility).
var ErrTooRestrictive = errors.New("updated validation is too restrictive")

// installCRDs is the InstallPlan's CRD step of OLM's catalog operator (step.go NewCRDV1Step) for
// each CRD of the bundle, then its wait for the API (Established and NamesAccepted). A CRD is
// created with the olm.managed label and the installed-alongside annotation of the CSV. If it
// exists already — an upgrade, or CRDs installed by someone else that no CSV owns (OSM's SMI
// CRDs): OLM's resolver only knows the APIs CSVs provide, so nothing stops the step — the existing
// CRD is replaced by the bundle's, after two checks: every existing object of each version the old
// CRD serves and the new one still serves validates against the new schema of that version
// (a failure is only a warning, returned, when the new CRD converts through a webhook: OLM trusts
// the webhook, which starts only later, to make them valid), and the new spec keeps every version
// of the old CRD's status.storedVersions. The update replaces the whole object (labels and
// annotations are the bundle's, not the old CRD's; status.storedVersions stays, as the apiserver
// keeps status on an update).
func installCRDs(ctx context.Context, c client.Client, list []*apiextv1.CustomResourceDefinition, csvName, namespace string) ([]string, error) {
	var warnings []string
	for _, want := range list {
		crd := want.DeepCopy()
		crd.ResourceVersion, crd.UID, crd.Generation, crd.CreationTimestamp, crd.ManagedFields = "", "", 0, metav1.Time{}, nil
		crd.Status = apiextv1.CustomResourceDefinitionStatus{}
		if crd.Labels == nil {
			crd.Labels = map[string]string{}
		}
		crd.Labels[ManagedLabel] = "true"
		setAlongside(crd, namespace, csvName)
		err := c.Create(ctx, crd.DeepCopy())
		if err == nil {
			continue
		}
		if !apierrors.IsAlreadyExists(err) {
			return warnings, fmt.Errorf("create CRD %s: %w", crd.Name, err)
		}
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur := &apiextv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: crd.Name}, cur); err != nil {
				return err
			}
			upd := crd.DeepCopy()
			upd.ResourceVersion = cur.ResourceVersion
			if err := validateExisting(ctx, c, cur, upd); err != nil {
				if !errors.Is(err, ErrTooRestrictive) || upd.Spec.Conversion == nil || upd.Spec.Conversion.Strategy != apiextv1.WebhookConverter {
					return fmt.Errorf("error validating existing CRs against new CRD's schema for %q: %w", crd.Name, err)
				}
				warnings = append(warnings, fmt.Sprintf("CRD %s: validation of existing CRs against the new schema failed, the new CRD converts through a webhook: %v", crd.Name, err))
			}
			if err := safeStorageVersionUpgrade(cur, upd); err != nil {
				return fmt.Errorf("%w updating %q: %w", ErrDataLoss, crd.Name, err)
			}
			// The alongside annotations of the CRD as it is stay (OLM keeps those of CSVs that
			// still exist: the harness has no CSV objects, so it keeps them all).
			setAlongside(upd, namespace, csvName, cur)
			return c.Update(ctx, upd)
		})
		if err != nil {
			return warnings, fmt.Errorf("install CRD %s: %w", crd.Name, err)
		}
	}
	for _, want := range list {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			crd := &apiextv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: want.Name}, crd); err != nil {
				return false, nil //nolint:nilerr // keep polling
			}
			return condition(crd, apiextv1.Established) && condition(crd, apiextv1.NamesAccepted), nil
		})
		if err != nil {
			return warnings, fmt.Errorf("wait for CRD %s to be established: %w", want.Name, err)
		}
	}
	return warnings, nil
}

func condition(crd *apiextv1.CustomResourceDefinition, t apiextv1.CustomResourceDefinitionConditionType) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == t {
			return c.Status == apiextv1.ConditionTrue
		}
	}
	return false
}

// setAlongside sets the installed-alongside annotations of dst: those of srcs (other CSVs) and
// the one of namespace/name.
func setAlongside(dst *apiextv1.CustomResourceDefinition, namespace, name string, srcs ...*apiextv1.CustomResourceDefinition) {
	refs := map[string]string{}
	for _, src := range srcs {
		for k, v := range src.Annotations {
			if strings.HasPrefix(k, AlongsidePrefix) && strings.Count(v, "/") == 1 && v != namespace+"/"+name {
				refs[k] = v
			}
		}
	}
	refs[alongsideKey(namespace, name)] = namespace + "/" + name
	ann := map[string]string{}
	for k, v := range dst.Annotations {
		if !strings.HasPrefix(k, AlongsidePrefix) {
			ann[k] = v
		}
	}
	for k, v := range refs {
		ann[k] = v
	}
	dst.Annotations = ann
}

func alongsideKey(namespace, name string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(namespace + "/" + name))
	return fmt.Sprintf("%s%x", AlongsidePrefix, h.Sum64())
}

// validateExisting lists, page by page through the apiserver (that is, through the CRD as it is),
// the objects of each version both the old and the new CRD serve, and validates each against the
// new CRD's schema of that version.
func validateExisting(ctx context.Context, c client.Client, old, upd *apiextv1.CustomResourceDefinition) error {
	oldServed := map[string]bool{}
	for _, v := range old.Spec.Versions {
		if v.Served {
			oldServed[v.Name] = true
		}
	}
	listKind := old.Spec.Names.ListKind
	if listKind == "" {
		listKind = old.Spec.Names.Kind + "List"
	}
	for _, v := range upd.Spec.Versions {
		if !v.Served || !oldServed[v.Name] {
			continue
		}
		internal := &apiextensions.CustomResourceValidation{}
		if err := apiextv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(v.Schema, internal, nil); err != nil {
			return err
		}
		var props *apiextensions.JSONSchemaProps
		if internal.OpenAPIV3Schema != nil {
			props = internal.OpenAPIV3Schema
		}
		validator, _, err := validation.NewSchemaValidator(props)
		if err != nil {
			return fmt.Errorf("error creating validator for schema version %s: %w", v.Name, err)
		}
		cont := ""
		for {
			items := &unstructured.UnstructuredList{}
			items.SetAPIVersion(old.Spec.Group + "/" + v.Name)
			items.SetKind(listKind)
			if err := c.List(ctx, items, client.Limit(500), client.Continue(cont)); err != nil {
				return fmt.Errorf("list %s %s: %w", old.Name, v.Name, err)
			}
			for _, cr := range items.Items {
				if errs := validation.ValidateCustomResource(field.NewPath(""), cr.UnstructuredContent(), validator).ToAggregate(); errs != nil {
					name := cr.GetName()
					if cr.GetNamespace() != "" {
						name = cr.GetNamespace() + "/" + name
					}
					return fmt.Errorf("%w: error validating %s %q: %w", ErrTooRestrictive, cr.GroupVersionKind(), name, errs)
				}
			}
			if cont = items.GetContinue(); cont == "" {
				break
			}
		}
	}
	return nil
}

// safeStorageVersionUpgrade: every version of the existing CRD's status.storedVersions is a
// version of the new CRD's spec (served or not).
func safeStorageVersionUpgrade(old, upd *apiextv1.CustomResourceDefinition) error {
	if len(upd.Spec.Versions) == 0 {
		return errors.New("could not find any versions in the new CRD")
	}
	for _, stored := range old.Status.StoredVersions {
		if !slices.ContainsFunc(upd.Spec.Versions, func(v apiextv1.CustomResourceDefinitionVersion) bool { return v.Name == stored }) {
			return fmt.Errorf("new CRD removes version %s that is listed as a stored version on the existing CRD", stored)
		}
	}
	return nil
}

// requirements is the CSV's requirement check of OLM's olm-operator for its owned CRDs: each is
// present, Established and NamesAccepted, and serves the version the CSV names.
func requirements(ctx context.Context, c client.Client, csv *operatorsv1alpha1.ClusterServiceVersion) error {
	var problems []string
	for _, d := range csv.Spec.CustomResourceDefinitions.Owned {
		crd := &apiextv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: d.Name}, crd); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", d.Name, err))
			continue
		}
		if !condition(crd, apiextv1.Established) || !condition(crd, apiextv1.NamesAccepted) {
			problems = append(problems, d.Name+": not Established and NamesAccepted")
		}
		if !slices.ContainsFunc(crd.Spec.Versions, func(v apiextv1.CustomResourceDefinitionVersion) bool { return v.Name == d.Version && v.Served }) {
			problems = append(problems, fmt.Sprintf("%s: version %s not served", d.Name, d.Version))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("CSV %s: requirements not met: %s", csv.Name, strings.Join(problems, "; "))
	}
	return nil
}

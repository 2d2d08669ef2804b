// Package crds defines the apiextensions.k8s.io/v1 CRDs smi2istio serves for every SMI kind and
// version: structural schemas with validation, a status subresource and printer columns. It is the
// single source of config/crd/bases (written by hack/crdgen) and of the local installer.
package crds

import (
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// API groups of SMI.
const (
	SplitGroup  = "split.smi-spec.io"
	AccessGroup = "access.smi-spec.io"
	SpecsGroup  = "specs.smi-spec.io"
)

// ConversionPath is where the operator serves the CRD conversion webhook.
const ConversionPath = "/convert"

// Default in-cluster location of the conversion webhook (config/default deploys it there).
const (
	WebhookServiceName      = "smi2istio-webhook-service"
	WebhookServiceNamespace = "smi2istio-system"
)

// All returns the SMI CRDs, conversion pointing at the in-cluster webhook Service. The caBundle is
// left empty: OLM, or the operator in self-signed mode, fills it in.
func All() []*apiextv1.CustomResourceDefinition {
	return []*apiextv1.CustomResourceDefinition{
		trafficSplit(), trafficTarget(), httpRouteGroup(), tcpRoute(), udpRoute(),
	}
}

var (
	readyCol  = apiextv1.CustomResourceColumnDefinition{Name: "Ready", Type: "string", JSONPath: `.status.conditions[?(@.type=="Ready")].status`}
	reasonCol = apiextv1.CustomResourceColumnDefinition{Name: "Reason", Type: "string", JSONPath: `.status.conditions[?(@.type=="Ready")].reason`}
	ageCol    = apiextv1.CustomResourceColumnDefinition{Name: "Age", Type: "date", JSONPath: ".metadata.creationTimestamp"}
)

func columns(extra ...apiextv1.CustomResourceColumnDefinition) []apiextv1.CustomResourceColumnDefinition {
	return append(append(extra, readyCol, reasonCol), ageCol)
}

type versionDef struct {
	name    string
	schema  *apiextv1.CustomResourceValidation
	columns []apiextv1.CustomResourceColumnDefinition
}

func crd(group, kind, plural, short string, versions ...versionDef) *apiextv1.CustomResourceDefinition {
	c := &apiextv1.CustomResourceDefinition{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   plural + "." + group,
			Labels: map[string]string{"app.kubernetes.io/name": "smi2istio", "app.kubernetes.io/part-of": "smi2istio"},
		},
		Spec: apiextv1.CustomResourceDefinitionSpec{
			Group: group,
			Names: apiextv1.CustomResourceDefinitionNames{
				Kind: kind, ListKind: kind + "List", Plural: plural, Singular: lower(kind),
				ShortNames: []string{short}, Categories: []string{"smi"},
			},
			Scope: apiextv1.NamespaceScoped,
		},
	}
	for i, v := range versions {
		c.Spec.Versions = append(c.Spec.Versions, apiextv1.CustomResourceDefinitionVersion{
			Name:                     v.name,
			Served:                   true,
			Storage:                  i == len(versions)-1, // the newest version is stored
			Schema:                   v.schema,
			Subresources:             &apiextv1.CustomResourceSubresources{Status: &apiextv1.CustomResourceSubresourceStatus{}},
			AdditionalPrinterColumns: v.columns,
		})
	}
	if len(versions) > 1 {
		c.Spec.Conversion = &apiextv1.CustomResourceConversion{
			Strategy: apiextv1.WebhookConverter,
			Webhook: &apiextv1.WebhookConversion{
				ConversionReviewVersions: []string{"v1"},
				ClientConfig: &apiextv1.WebhookClientConfig{Service: &apiextv1.ServiceReference{
					Name: WebhookServiceName, Namespace: WebhookServiceNamespace,
					Path: ptr.To(ConversionPath), Port: ptr.To[int32](443),
				}},
			},
		}
	} else {
		c.Spec.Conversion = &apiextv1.CustomResourceConversion{Strategy: apiextv1.NoneConverter}
	}
	return c
}

func lower(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}

// ---- TrafficSplit ----

// maxBackends bounds a TrafficSplit (in every version, so that conversion never produces an object
// its version would reject); it also keeps the v1alpha1 weight rule within the CEL cost budget.
const maxBackends = 100

func trafficSplit() *apiextv1.CustomResourceDefinition {
	intWeight := props{Type: "integer", Format: "int64", Minimum: ptr.To(0.0),
		Description: "Relative weight of this backend; weights are compared with each other, they need not add up to 100."}
	quantityWeight := props{XIntOrString: true, MaxLength: ptr.To[int64](32),
		Description: "Relative weight as a Kubernetes quantity (e.g. 500m, 1, 1500m); compared in milli-units.",
		XValidations: apiextv1.ValidationRules{{
			Rule:    `type(self) == int ? self >= 0 : (isQuantity(self) && !quantity(self).isLessThan(quantity('0')) && quantity(self).isLessThan(quantity('9000000000000')))`,
			Message: "weight must be a non-negative quantity below 9e12 (e.g. 500m, 1, 1500m)",
		}},
	}
	backend := func(weight props) props {
		return object("A Service that receives part of the traffic of the root Service.", []string{"service", "weight"},
			map[string]props{"service": nameStr("Name of the backend Service, in the TrafficSplit's namespace (a DNS-1035 label).", dns1035Label, 63), "weight": weight})
	}
	spec := func(weight props, withMatches bool) props {
		backends := array("Services the root Service's traffic is split across.", backend(weight))
		backends.MaxItems = ptr.To[int64](maxBackends)
		f := map[string]props{
			"service":  nameStr("The root Service clients address: name, name.namespace or an FQDN.", dns1123Subdomain, 253),
			"backends": backends,
		}
		if withMatches {
			f["matches"] = array("HTTPRouteGroups whose matches select the traffic to split; other traffic goes to the root Service.",
				object("A reference to an HTTPRouteGroup in the TrafficSplit's namespace.", []string{"kind", "name"}, map[string]props{
					"apiGroup": str("API group of the referenced object (specs.smi-spec.io)."),
					"kind":     enumStr("Kind of the referenced object.", "HTTPRouteGroup"),
					"name":     nonEmptyStr("Name of the HTTPRouteGroup."),
				}))
		}
		return object("TrafficSplit spec.", []string{"service", "backends"}, f)
	}
	def := func(v string, weight props, withMatches bool) versionDef {
		return versionDef{
			name: v,
			schema: root("TrafficSplit splits the traffic addressed to a root Service across backend Services.",
				[]string{"spec"}, map[string]props{"spec": spec(weight, withMatches)}),
			columns: columns(apiextv1.CustomResourceColumnDefinition{Name: "Service", Type: "string", JSONPath: ".spec.service"}),
		}
	}
	return crd(SplitGroup, "TrafficSplit", "trafficsplits", "ts",
		def("v1alpha1", quantityWeight, false),
		def("v1alpha2", intWeight, false),
		def("v1alpha3", intWeight, true),
		def("v1alpha4", intWeight, true),
	)
}

// ---- TrafficTarget ----

func trafficTarget() *apiextv1.CustomResourceDefinition {
	subject := func(destination, withPort bool, desc string) props {
		name := nameStr("Name of the ServiceAccount (a DNS-1123 subdomain).", dns1123Subdomain, 253)
		if destination {
			// The destination's name is a label value on every generated object.
			name = nameStr("Name of the ServiceAccount (a DNS-1123 subdomain of at most 63 characters: it labels the generated objects).", dns1123Subdomain, 63)
		}
		namespace := nameStr("Namespace of the ServiceAccount (a DNS-1123 label); defaults to the TrafficTarget's namespace.", dns1123Label, 63)
		namespace.MinLength = nil // "" is the default
		namespace.Pattern = `^$|` + dns1123Label
		f := map[string]props{
			"kind":      enumStr("Kind of the identity.", "ServiceAccount"),
			"name":      name,
			"namespace": namespace,
		}
		if withPort {
			f["port"] = port("Destination port traffic is allowed to.")
		}
		return object(desc, []string{"kind", "name"}, f)
	}
	rules := array("Routes the sources may use on the destination.",
		object("A reference to a route object in the TrafficTarget's namespace.", []string{"kind", "name"}, map[string]props{
			"kind":    enumStr("Kind of the route object.", "HTTPRouteGroup", "TCPRoute", "UDPRoute"),
			"name":    nonEmptyStr("Name of the route object."),
			"matches": array("Names of the route object's matches allowed; empty means all of them.", str("")),
		}))
	fields := func(withPort bool) map[string]props {
		return map[string]props{
			"destination": subject(true, withPort, "The identity traffic is allowed to."),
			"sources":     array("Identities allowed to send traffic to the destination.", subject(false, false, "An identity allowed to send traffic.")),
		}
	}
	const desc = "TrafficTarget allows traffic from source identities to a destination identity on the given routes."
	destCol := func(path string) []apiextv1.CustomResourceColumnDefinition {
		return columns(apiextv1.CustomResourceColumnDefinition{Name: "Destination", Type: "string", JSONPath: path})
	}
	// v1alpha1 has no spec wrapper and calls the rules "specs".
	flat := fields(true)
	flat["specs"] = rules
	wrapped := func(withPort bool) props {
		f := fields(withPort)
		f["rules"] = rules
		return object("TrafficTarget spec.", []string{"destination"}, f)
	}
	return crd(AccessGroup, "TrafficTarget", "traffictargets", "tt",
		versionDef{"v1alpha1", root(desc, []string{"destination"}, flat), destCol(".destination.name")},
		versionDef{"v1alpha2", root(desc, []string{"spec"}, map[string]props{"spec": wrapped(true)}), destCol(".spec.destination.name")},
		versionDef{"v1alpha3", root(desc, []string{"spec"}, map[string]props{"spec": wrapped(false)}), destCol(".spec.destination.name")},
	)
}

// ---- HTTPRouteGroup ----

// headersSchema accepts both shapes found in the wild: a list of single-key maps (smi-sdk-go before
// v0.5, OSM's demos) and a plain map (later spec text). A structural schema cannot say "array or
// object", and CEL cannot see an untyped node, so the shape is checked when the object is
// translated (Accepted=False), like the regexes in the values.
func headersSchema() props {
	return props{
		Description:            "Request headers to match, name to regex: a map, or a list of single-entry maps.",
		XPreserveUnknownFields: ptr.To(true),
	}
}

func httpRouteGroup() *apiextv1.CustomResourceDefinition {
	methods := array("HTTP methods to match; \"*\" matches any.", enumStr("An HTTP method.",
		"*", "GET", "HEAD", "PUT", "POST", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))
	match := func(withHeaders bool) props {
		f := map[string]props{
			"name":      str("Name of the match, referenced from TrafficTargets and TrafficSplits."),
			"methods":   methods,
			"pathRegex": str("RE2 regex the whole request path must match."),
		}
		if withHeaders {
			f["headers"] = headersSchema()
		}
		return object("An HTTP request match; all fields must match.", nil, f)
	}
	matches := func(withHeaders bool) props {
		return array("HTTP request matches.", match(withHeaders))
	}
	const desc = "HTTPRouteGroup names groups of HTTP requests for TrafficTargets and TrafficSplits."
	wrapped := root(desc, nil, map[string]props{"spec": object("HTTPRouteGroup spec.", nil, map[string]props{"matches": matches(true)})})
	return crd(SpecsGroup, "HTTPRouteGroup", "httproutegroups", "htr",
		versionDef{"v1alpha1", root(desc, nil, map[string]props{"matches": matches(false)}), columns()},
		versionDef{"v1alpha2", root(desc, nil, map[string]props{"matches": matches(true)}), columns()},
		versionDef{"v1alpha3", wrapped, columns()},
		versionDef{"v1alpha4", wrapped, columns()},
	)
}

// ---- TCPRoute / UDPRoute ----

func portMatch(desc string) props {
	return object(desc, nil, map[string]props{
		"name":  str("Name of the match."),
		"ports": array("Ports to match; empty means every port.", port("")),
	})
}

func tcpRoute() *apiextv1.CustomResourceDefinition {
	const desc = "TCPRoute names TCP traffic for TrafficTargets."
	return crd(SpecsGroup, "TCPRoute", "tcproutes", "tcpr",
		versionDef{"v1alpha1", root(desc, nil, nil), columns()},
		versionDef{"v1alpha2", root(desc, nil, nil), columns()},
		versionDef{"v1alpha3", root(desc, nil, map[string]props{"spec": object("TCPRoute spec (empty in v1alpha3).", nil, map[string]props{})}), columns()},
		versionDef{"v1alpha4", root(desc, nil, map[string]props{"spec": object("TCPRoute spec.", nil, map[string]props{
			"matches": portMatch("TCP ports to match.")})}), columns()},
	)
}

func udpRoute() *apiextv1.CustomResourceDefinition {
	const desc = "UDPRoute names UDP traffic for TrafficTargets (Istio cannot enforce UDP: reported Unsupported)."
	return crd(SpecsGroup, "UDPRoute", "udproutes", "udpr",
		versionDef{"v1alpha4", root(desc, nil, map[string]props{"spec": object("UDPRoute spec.", nil, map[string]props{
			"matches": portMatch("UDP ports to match.")})}), columns()},
	)
}

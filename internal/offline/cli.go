package offline

import (
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/translate"
)

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// settingFlags are the flags that set a field of SMI2IstioConfig's spec, and that field.
var settingFlags = []struct{ flag, field, usage string }{
	{"access-mode", "accessMode", "Enforcing (an allow-nothing baseline per namespace; TrafficTargets allow) or Permissive (no baseline, TrafficTargets not enforced) (default Enforcing)"},
	{"regex-policy", "regexPolicy", "Envoy (an EnvoyFilter checks the regexes an AuthorizationPolicy cannot express) or Reject (such matches are left out, i.e. denied) (default Envoy)"},
	{"min-istio-version", "minIstioVersion", `oldest Istio the outputs must work on, "1.<minor>"; 1.22 or later enables path templates (default "1.16")`},
	{"trust-domain", "trustDomain", "trust domain of the workload identities (principals) (default cluster.local)"},
	{"root-namespace", "istioNamespace", "Istio's root namespace: no baseline and no access outputs there (default istio-system)"},
	{"dataplane-mode", "dataplaneMode", "Auto (ambient where the input's Namespace is labelled istio.io/dataplane-mode=ambient and not for sidecar injection; a namespace not in the input is sidecar), Sidecar or Ambient (default Auto)"},
	{"route-api", "routeAPI", "what TrafficSplits become in sidecar namespaces: VirtualService or GatewayAPI (HTTPRoute/TCPRoute attached to the root Service); ambient namespaces always get GatewayAPI (default VirtualService)"},
}

// Main runs `smi2istio translate`: Istio YAML on stdout, the fidelity report on stderr. It exits 1
// when an object cannot be translated or the input cannot be read, and then prints nothing on
// stdout; 2 on usage errors.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("translate", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var files fileList
	fset.Var(&files, "f", "SMI and Service manifests: a file, a directory (read recursively) or - for stdin; repeatable")
	domain := fset.String("cluster-domain", "cluster.local", "DNS suffix of the cluster's Services")
	configFile := fset.String("config", "", "a file holding an SMI2IstioConfig (smi2istio.io/v1alpha1) whose spec gives the settings below; flags override it")
	settings := map[string]*string{}
	for _, s := range settingFlags {
		settings[s.flag] = fset.String(s.flag, "", s.usage)
	}
	fset.Usage = func() {
		fmt.Fprintln(stderr, "usage: smi2istio translate -f <file|dir|-> [-f ...] [--config <SMI2IstioConfig file>]")
		fmt.Fprintln(stderr, "         [--access-mode Enforcing|Permissive] [--regex-policy Envoy|Reject] [--min-istio-version 1.N]")
		fmt.Fprintln(stderr, "         [--trust-domain cluster.local] [--root-namespace istio-system] [--cluster-domain cluster.local]")
		fmt.Fprintln(stderr, "         [--dataplane-mode Auto|Sidecar|Ambient] [--route-api VirtualService|GatewayAPI]")
		fmt.Fprintln(stderr, "Prints the Istio objects the operator would apply for the SMI objects in the input, in apply order:")
		fmt.Fprintln(stderr, "in Enforcing mode first the allow-nothing AuthorizationPolicy smi2istio-default-deny of every namespace")
		fmt.Fprintln(stderr, "holding SMI objects (except Istio's root namespace). SMI objects are checked against smi2istio's CRDs")
		fmt.Fprintln(stderr, "as kubectl apply would (an unknown or misspelt field is an error). The fidelity report goes to stderr:")
		fmt.Fprintln(stderr, "one line per finding (object: field: reason: message). On any error nothing is printed on stdout.")
		fmt.Fprintln(stderr, "A dump of a cluster (kubectl get ... -o yaml, List documents included) may hold Namespaces: those in the")
		fmt.Fprintln(stderr, "mesh by spec.membership (Open Service Mesh's monitored ones with Auto) get the baseline too; Open Service")
		fmt.Fprintln(stderr, "Mesh's MeshConfig, whose permissive setting is the access mode unless --config or --access-mode gives one;")
		fmt.Fprintln(stderr, "and OSM's policy objects (Egress, IngressBackend, Retry, UpstreamTrafficSetting), named on stderr, not translated.")
		fmt.Fprintln(stderr, "Ambient namespaces (--dataplane-mode) get Gateway API routes and ztunnel or waypoint policies: a waypoint (a")
		fmt.Fprintln(stderr, "Gateway of class istio-waypoint in the input, named by istio.io/use-waypoint) is used when its namespace gets")
		fmt.Fprintln(stderr, "a baseline, printed with the waypoint's own allow-nothing policy; the input's Gateway API routes tell where")
		fmt.Fprintln(stderr, "their Services send.")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return 2
	}
	if len(files) == 0 || fset.NArg() > 0 {
		fset.Usage()
		return 2
	}
	set := map[string]bool{}
	fset.Visit(func(f *flag.Flag) { set[f.Name] = true })
	spec := v1alpha1.SMI2IstioConfigSpec{}
	if *configFile != "" {
		var err error
		if spec, err = readConfig(*configFile); err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return 1
		}
	}
	flagSpec := map[string]any{}
	for _, s := range settingFlags {
		if set[s.flag] {
			flagSpec[s.field] = *settings[s.flag]
		}
	}
	if errs := checkSettings(flagSpec); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(stderr, "error: %s\n", e)
		}
		return 2
	}
	overrideSpec(&spec, flagSpec)
	opts := optionsOf(spec, *domain)

	var objs []*unstructured.Unstructured
	for _, f := range files {
		got, err := read(f, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return 1
		}
		objs = append(objs, got...)
	}
	if *configFile == "" {
		for _, u := range objs {
			if u.GroupVersionKind().GroupKind() == v1alpha1.GroupVersion.WithKind("SMI2IstioConfig").GroupKind() {
				fmt.Fprintf(stderr, "note: the input holds SMI2IstioConfig %s, which is not read: pass its file with --config to use its settings\n", u.GetName())
			}
		}
	}
	invalid, err := ValidateSMI(objs)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	if len(invalid) > 0 {
		for _, e := range invalid {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintf(stderr, "error: %d field(s) of the SMI objects are rejected by smi2istio's CRDs (as kubectl apply would); nothing printed\n", len(invalid))
		return 1
	}
	loaded, err := Load(objs)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	// Open Service Mesh's settings in a dump of its cluster, as the operator takes them.
	if len(loaded.OSMMeshConfigs) > 0 {
		if *configFile != "" || set["access-mode"] {
			fmt.Fprintln(stderr, "note: the input holds Open Service Mesh's MeshConfig, which is not used: --config or --access-mode gives the access mode")
		} else {
			mode, source := membership.OSMAccessMode(loaded.OSMMeshConfigs)
			opts.Mode = mode
			fmt.Fprintf(stderr, "note: access mode %s, taken from %s (as the operator does when it creates its configuration)\n", mode, source)
		}
	}
	untranslated(stderr, loaded.Untranslated)
	out, report, failed, err := Render(loaded.TranslateWith(opts))
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	for _, line := range report {
		fmt.Fprintln(stderr, line)
	}
	if failed > 0 {
		// Nothing on stdout: a partial output piped into kubectl apply could hold policies
		// without what makes them exact, or miss what a failed object was meant to allow or deny.
		fmt.Fprintf(stderr, "error: %d object(s) could not be translated; nothing printed\n", failed)
		return 1
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	return 0
}

// untranslated names, on stderr, the objects of Open Service Mesh's policy API, which smi2istio does
// not translate, and counts them by kind.
func untranslated(stderr io.Writer, objs []*unstructured.Unstructured) {
	if len(objs) == 0 {
		return
	}
	byKind := map[string]int{}
	for _, u := range objs {
		gk := u.GroupVersionKind().GroupKind()
		byKind[gk.Kind]++
		fmt.Fprintf(stderr, "%s %s/%s: %s: NotTranslated: smi2istio does not translate Open Service Mesh's policy API: move it to Istio by hand\n",
			gk.Kind, u.GetNamespace(), u.GetName(), gk.Group)
	}
	kinds := make([]string, 0, len(byKind))
	for k, n := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(kinds)
	fmt.Fprintf(stderr, "note: %d Open Service Mesh policy object(s) not translated (%s)\n", len(objs), strings.Join(kinds, ", "))
}

// readConfig reads a file holding one SMI2IstioConfig, checked against its CRD as kubectl apply
// would (unknown fields, enums, patterns).
func readConfig(path string) (v1alpha1.SMI2IstioConfigSpec, error) {
	var spec v1alpha1.SMI2IstioConfigSpec
	objs, err := manifests.ReadFileStrict(path)
	if err != nil {
		return spec, fmt.Errorf("--config: %w", err)
	}
	if len(objs) != 1 || objs[0].GetKind() != "SMI2IstioConfig" || objs[0].GetAPIVersion() != v1alpha1.GroupVersion.String() {
		return spec, fmt.Errorf("--config %s: want exactly one %s SMI2IstioConfig", path, v1alpha1.GroupVersion)
	}
	cfg, err := checkConfig(objs[0])
	if err != nil {
		return spec, fmt.Errorf("--config %s: %w", path, err)
	}
	return cfg.Spec, nil
}

// overrideSpec sets the fields the flags give (already checked).
func overrideSpec(spec *v1alpha1.SMI2IstioConfigSpec, flagSpec map[string]any) {
	str := func(field string) (string, bool) {
		v, ok := flagSpec[field].(string)
		return v, ok
	}
	if v, ok := str("accessMode"); ok {
		spec.AccessMode = v1alpha1.AccessMode(v)
	}
	if v, ok := str("regexPolicy"); ok {
		spec.RegexPolicy = v1alpha1.RegexPolicy(v)
	}
	if v, ok := str("minIstioVersion"); ok {
		spec.MinIstioVersion = v
	}
	if v, ok := str("trustDomain"); ok {
		spec.TrustDomain = v
	}
	if v, ok := str("istioNamespace"); ok {
		spec.IstioNamespace = v
	}
	if v, ok := str("dataplaneMode"); ok {
		spec.DataplaneMode = v1alpha1.DataplaneMode(v)
	}
	if v, ok := str("routeAPI"); ok {
		spec.RouteAPI = v1alpha1.RouteAPI(v)
	}
}

// optionsOf applies the operator's defaults (controllers/config.go withDefaults and resolve):
// Enforcing, Envoy, Istio 1.16, istio-system; the trust domain, read from Istio's mesh config in
// a cluster, is cluster.local offline unless given.
func optionsOf(spec v1alpha1.SMI2IstioConfigSpec, clusterDomain string) Options {
	o := Options{
		Mode:          spec.AccessMode,
		RootNamespace: spec.IstioNamespace,
		Membership:    spec.Membership,
		Dataplane:     spec.DataplaneMode,
		RouteAPI:      spec.RouteAPI,
		Mesh: translate.Mesh{
			ClusterDomain: clusterDomain,
			TrustDomain:   spec.TrustDomain,
			RegexPolicy:   translate.RegexPolicy(spec.RegexPolicy),
			PathTemplates: minorAtLeast(spec.MinIstioVersion, 22),
		},
	}
	if o.Mesh.TrustDomain == "" {
		o.Mesh.TrustDomain = "cluster.local"
	}
	if o.Mesh.RegexPolicy == "" {
		o.Mesh.RegexPolicy = translate.RegexEnvoy
	}
	return o.withDefaults()
}

// minorAtLeast is controllers/config.go's: "1.22" and later enable path templates.
func minorAtLeast(version string, minor int) bool {
	_, m, ok := strings.Cut(version, ".")
	if !ok {
		return false
	}
	n := 0
	for _, c := range m {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return m != "" && n >= minor
}

func read(path string, stdin io.Reader) ([]*unstructured.Unstructured, error) {
	if path == "-" {
		data, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		objs, err := manifests.DecodeStrict(data)
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		return objs, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if info.IsDir() {
		files = nil
		err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					files = append(files, p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		objs, err := manifests.ReadFileStrict(f)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

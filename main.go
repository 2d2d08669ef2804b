// Command smi2istio runs the operator that makes Istio enforce SMI objects.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	crzap "sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	crdmanifests "github.com/smi2istio/smi2istio/config/crd"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/certs"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/memlimit"
	"github.com/smi2istio/smi2istio/internal/offline"
	smirecorder "github.com/smi2istio/smi2istio/internal/recorder"
	"github.com/smi2istio/smi2istio/internal/smi/conversion"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/writes"
	"github.com/smi2istio/smi2istio/translate"
)

// version is set at build time (make build).
var version = "dev"

var scheme = runtime.NewScheme()

// eventQueue is how many Events may wait to be written; more are dropped (and counted).
const eventQueue = 4096

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextv1.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	// The compact SMI and Istio types are added by run (addCacheTypes), once the SMI versions are
	// chosen (--smi-crds).
}

var cacheTypesOnce sync.Once

// addCacheTypes registers the compact cache types in the scheme, in the SMI versions chosen: once
// per process (they are process-wide; tests run the operator more than once).
func addCacheTypes() {
	cacheTypesOnce.Do(func() { utilruntime.Must(cache.AddToScheme(scheme)) })
}

type options struct {
	metricsAddr       string
	metricsSecure     bool
	metricsCertDir    string
	pprofAddr         string
	concurrency       int
	probeAddr         string
	leaderElect       bool
	webhookHost       string
	webhookPort       int
	webhookCertDir    string
	webhookCertMode   string
	localControlPlane string
	localStateDir     string
	localIstioCRDs    string
	meshConfigNS      []string
	clusterDomain     string
	smiCRDs           string
	zap               crzap.Options
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "translate" {
		os.Exit(offline.Main(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	var o options
	bindFlags(flag.CommandLine, &o)
	flag.Parse()

	zl := crzap.NewRaw(crzap.UseFlagOptions(&o.zap))
	log := zapr.NewLogger(zl)
	ctrl.SetLogger(log)
	if err := run(ctrl.SetupSignalHandler(), log, o); err != nil {
		log.Error(err, "smi2istio stopped")
		_ = zl.Sync()
		os.Exit(1)
	}
}

// bindFlags registers the manager's flags (also what config/manager passes in a cluster).
func bindFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address the Prometheus metrics endpoint binds to; \"0\" disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS to clients the apiserver authenticates and authorizes (a bearer token allowed GET on /metrics, e.g. by the metrics-reader ClusterRole); false serves plain HTTP to anyone (local runs and tests on loopback only).")
	fs.StringVar(&o.metricsCertDir, "metrics-cert-dir", "", "Directory with tls.crt and tls.key for the metrics endpoint (reloaded when they change); empty: a self-signed certificate made at start-up.")
	fs.IntVar(&o.concurrency, "max-concurrent-reconciles", 4, "How many objects each controller reconciles at once (different objects only; one object is never reconciled twice at once). Reconciles wait on the apiserver, not the CPU.")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "", "Address of Go's pprof endpoints (/debug/pprof); empty disables them.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address the health (/healthz) and readiness (/readyz) probes bind to.")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles at a time.")
	fs.StringVar(&o.webhookHost, "webhook-host", "", "Address the conversion webhook binds to (all addresses when empty; 127.0.0.1 for a local control plane).")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "Port of the conversion webhook.")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs"),
		"Directory with tls.crt and tls.key for the conversion webhook (where OLM mounts them).")
	fs.StringVar(&o.webhookCertMode, "webhook-cert-mode", "auto",
		"provided: serve the certificate in --webhook-cert-dir (OLM, cert-manager); self-signed: create one at start-up and set the SMI CRDs' caBundle; auto: provided when the directory holds one, else self-signed.")
	fs.StringVar(&o.localControlPlane, "local-control-plane", "auto",
		"auto: start a local etcd + kube-apiserver when no cluster is configured (no --kubeconfig, no $KUBECONFIG, not in a pod); always; never.")
	fs.StringVar(&o.localStateDir, "local-state-dir", defaultStateDir(), "Where a local control plane's kubeconfig is written.")
	fs.StringVar(&o.localIstioCRDs, "local-istio-crds", "", "Istio's CRD bundle (crd-all.gen.yaml) to install on a local control plane; `make run` passes the pinned one.")
	fs.Func("mesh-config-namespaces", "Comma-separated namespaces where Istio's revisions keep their mesh configs (istio-<rev>; OSSM 2: istio-<smcp> in each control plane's namespace), the only ones where ConfigMaps are read besides those named istio (default istio-system; the operator needs read access to ConfigMaps there, config/rbac's mesh-config-reader).",
		func(v string) error {
			o.meshConfigNS = nil
			for _, ns := range strings.Split(v, ",") {
				if ns = strings.TrimSpace(ns); ns != "" {
					o.meshConfigNS = append(o.meshConfigNS, ns)
				}
			}
			return nil
		})
	o.meshConfigNS = []string{"istio-system"}
	fs.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "DNS suffix of the cluster's Services.")
	fs.StringVar(&o.smiCRDs, "smi-crds", controllers.SMICRDsAuto,
		"Whose SMI CRDs to work with: own (smi2istio's, in the versions they store, status in the status subresource); foreign (the CRDs installed, e.g. Open Service Mesh's, kept as they are: each kind watched in a version they serve, conditions as Events where there is no status subresource, never written); auto: own for the CRDs labelled app.kubernetes.io/part-of=smi2istio, foreign for the others. A local control plane always gets smi2istio's.")

	o.zap = crzap.Options{Development: false}
	o.zap.BindFlags(fs)
}

func defaultStateDir() string {
	if d := os.Getenv("SMI2ISTIO_CACHE"); d != "" {
		return filepath.Join(d, "local")
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "smi2istio", "local")
	}
	return filepath.Join(os.TempDir(), "smi2istio-local")
}

// run is the operator: cluster (or local control plane) → webhook certificate → manager → CRDs →
// reconcilers → start.
func run(ctx context.Context, log logr.Logger, o options) error {
	soft, err := memlimit.FromEnv()
	if err != nil {
		return err
	}
	if soft > 0 {
		log.Info("Go soft memory limit set below the container's", "softLimitMiB", soft>>20, "reserveMiB", memlimit.Reserve>>20)
	}
	// The binary's pages the start-up mapped (much of it code that never runs) are dropped: the
	// container is charged for what is mapped, and from now on only what runs is (docs/benchmarks.md).
	if released, err := memlimit.ReleaseBinaryPages(); err != nil {
		log.Error(err, "release the binary's read-only pages")
	} else if released > 0 {
		log.V(1).Info("binary's read-only pages released", "mappedMiB", released>>20)
	}
	cfg, stop, local, err := clusterConfig(log, &o)
	if err != nil {
		return err
	}
	defer stop()
	mode, bundle, cleanup, err := webhookCert(&o)
	if err != nil {
		return err
	}
	defer cleanup()
	var caBundle []byte
	if bundle != nil {
		caBundle = bundle.CAPEM
	}
	if err := installCRDs(ctx, log, cfg, o, local, caBundle); err != nil {
		return err
	}
	watch, err := chooseSMIKinds(ctx, log, cfg, o, local)
	if err != nil {
		return err
	}
	mgr, err := newManager(cfg, o, controllers.AbsentSMIKinds(watch.Choice))
	if err != nil {
		return err
	}
	if err := mgr.Add(watch); err != nil {
		return fmt.Errorf("add SMI CRD watch: %w", err)
	}
	if bundle != nil {
		if err := mgr.Add(certRotator(log, mgr, o, bundle)); err != nil {
			return fmt.Errorf("add webhook certificate rotator: %w", err)
		}
	}
	if err := setupReconcilers(ctx, log, mgr, o); err != nil {
		return err
	}
	log.Info("starting manager", "version", version, "webhookPort", o.webhookPort, "certMode", mode, "leaderElection", o.leaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

// clusterConfig is the cluster to work on: the configured one, or a local control plane started
// here (--local-control-plane; stop stops it).
func clusterConfig(log logr.Logger, o *options) (cfg *rest.Config, stop func(), local bool, err error) {
	stop = func() {}
	if local, err = wantLocal(o.localControlPlane); err != nil {
		return nil, stop, false, err
	}
	if !local {
		if cfg, err = config.GetConfig(); err != nil {
			return nil, stop, false, fmt.Errorf("load cluster config: %w", err)
		}
		return cfg, stop, false, nil
	}
	cp, err := localcp.Start(filepath.Join(o.localStateDir, "kubeconfig"))
	if err != nil {
		return nil, stop, false, err
	}
	stop = func() {
		log.Info("stopping local control plane (etcd, kube-apiserver)")
		if err := cp.Stop(); err != nil {
			log.Error(err, "stop local control plane")
		}
	}
	log.Info("local control plane running; point kubectl at it with: export KUBECONFIG="+cp.Kubeconfig,
		"kubeconfig", cp.Kubeconfig, "host", cp.Config.Host)
	if o.webhookHost == "" {
		o.webhookHost = "127.0.0.1"
	}
	if o.webhookCertMode == "auto" {
		o.webhookCertMode = "self-signed"
	}
	return cp.Config, stop, true, nil
}

// webhookCert decides where the conversion webhook's certificate comes from; in self-signed mode
// it writes one (and returns it: its CA goes in the CRDs' caBundle).
func webhookCert(o *options) (mode string, bundle *certs.Bundle, cleanup func(), err error) {
	cleanup = func() {}
	if mode, err = certMode(o.webhookCertMode, o.webhookCertDir); err != nil || mode != "self-signed" {
		return mode, nil, cleanup, err
	}
	dir, err := os.MkdirTemp("", "smi2istio-webhook-certs-")
	if err != nil {
		return "", nil, cleanup, fmt.Errorf("create webhook certificate directory: %w", err)
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	b, err := selfSignedWebhookCert(o.webhookHost)
	if err != nil {
		return "", nil, cleanup, err
	}
	if err := b.WriteServing(dir); err != nil {
		return "", nil, cleanup, err
	}
	o.webhookCertDir = dir
	return mode, b, cleanup, nil
}

// certRotator renews the self-signed certificate a month before it expires, without a restart
// (internal/certs.Rotator: both CAs trusted while the webhook server reloads the new certificate).
func certRotator(log logr.Logger, mgr ctrl.Manager, o options, current *certs.Bundle) *certs.Rotator {
	return &certs.Rotator{
		Dir: o.webhookCertDir, Current: current, RenewBefore: 30 * 24 * time.Hour, Interval: time.Hour, Now: time.Now,
		Make: func(time.Time) (*certs.Bundle, error) { return selfSignedWebhookCert(o.webhookHost) },
		Publish: func(ctx context.Context, ca []byte) error {
			if err := crds.SetCABundle(ctx, mgr.GetClient(), ca); err != nil {
				return err
			}
			log.Info("renewed the webhook's self-signed certificate: the SMI CRDs' caBundle updated")
			return nil
		},
		OnError: func(err error) { log.Error(err, "renew the webhook's self-signed certificate") },
	}
}

// runsInTests: tests run the operator more than once in one process, and controller-runtime refuses
// a controller name it has seen (its metrics would mix).
var runsInTests bool

// newManager is the controller-runtime manager with the operator's cache, metrics, probes and
// conversion webhook.
func newManager(cfg *rest.Config, o options, absent []schema.GroupVersionKind) (ctrl.Manager, error) {
	writes.Count(cfg)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		// SMI kinds without a CRD read as empty (--smi-crds).
		NewCache: cache.WithoutKinds(absent),
		// SMI and Istio objects are read as unstructured: cache them like typed ones.
		Client: client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		// The client maps each request's kind from memory (cache.Mappings); the manager's mapper,
		// which the setup and the membership ask whether a kind is served, is left as it is.
		NewClient: func(cfg *rest.Config, o client.Options) (client.Client, error) {
			o.Mapper = cache.Mappings(o.Mapper)
			return client.New(cfg, o)
		},
		Cache:                  cache.Options(),
		Metrics:                metricsOptions(o),
		HealthProbeBindAddress: o.probeAddr,
		PprofBindAddress:       o.pprofAddr,
		Controller:             ctrlconfig.Controller{MaxConcurrentReconciles: o.concurrency, SkipNameValidation: ptr.To(runsInTests)},
		LeaderElection:         o.leaderElect,
		LeaderElectionID:       "smi2istio.smi2istio.io",
		// The Deployment passes its namespace (downward API); outside a pod there is no default.
		LeaderElectionNamespace: os.Getenv("POD_NAMESPACE"),
		// The process exits as soon as the manager stops: handing the lease over at once spares a
		// rolling update (or an OLM upgrade) the lease's expiry.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    o.webhookHost,
			Port:    o.webhookPort,
			CertDir: o.webhookCertDir,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }},
		}),
	})
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	for _, c := range []prometheus.Collector{conversion.Conversions, conversion.Refused, writes.Requests, smirecorder.Dropped} {
		if err := metrics.Registry.Register(c); err != nil && !errors.As(err, &prometheus.AlreadyRegisteredError{}) {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	mgr.GetWebhookServer().Register(crds.ConversionPath, conversion.Handler(ctrl.Log.WithName("conversion")))
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return nil, fmt.Errorf("add readiness check: %w", err)
	}
	return mgr, nil
}

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsOptions serves /metrics as Kubebuilder v4 scaffolds: over HTTPS (HTTP/1.1 only), to
// clients the apiserver authenticates (TokenReview) and authorizes (SubjectAccessReview of GET on
// the non-resource URL /metrics, which config/rbac's metrics-reader ClusterRole grants). With
// --metrics-secure=false: plain HTTP to anyone, for the e2e and bench harness on loopback, which
// pass it explicitly.
func metricsOptions(o options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.metricsAddr}
	if !o.metricsSecure {
		return m
	}
	m.SecureServing = true
	m.FilterProvider = filters.WithAuthenticationAndAuthorization
	m.CertDir = o.metricsCertDir
	m.TLSOpts = []func(*tls.Config){func(c *tls.Config) {
		c.MinVersion = tls.VersionTLS12
		// HTTP/2 stays off, as in Kubebuilder's scaffold (HTTP/2 Rapid Reset, CVE-2023-44487).
		c.NextProtos = []string{"http/1.1"}
	}}
	return m
}

// installCRDs points the CRDs' conversion at this process: it installs them on a local control
// plane, or sets the caBundle of a self-signed certificate in a cluster. It needs a direct client:
// the manager's cache is not started yet. Then it checks that Istio is there.
func installCRDs(ctx context.Context, log logr.Logger, cfg *rest.Config, o options, local bool, caBundle []byte) error {
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	switch {
	case local:
		cc := apiextv1.WebhookClientConfig{
			URL:      ptr.To("https://" + net.JoinHostPort(o.webhookHost, strconv.Itoa(o.webhookPort)) + crds.ConversionPath),
			CABundle: caBundle,
		}
		own := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(crdmanifests.ConfigCRD, own); err != nil {
			return fmt.Errorf("decode the embedded SMI2IstioConfig CRD: %w", err)
		}
		if err := crds.Install(ctx, direct, append(crds.WithClientConfig(crds.All(), cc), own)); err != nil {
			return err
		}
		log.Info("installed SMI CRDs on the local control plane", "webhook", *cc.URL)
		if o.localIstioCRDs != "" {
			istio, err := crds.LoadFile(o.localIstioCRDs)
			if err != nil {
				return err
			}
			if err := crds.Install(ctx, direct, istio); err != nil {
				return err
			}
			log.Info("installed Istio's CRDs on the local control plane", "count", len(istio), "file", o.localIstioCRDs)
		}
	case caBundle != nil:
		if err := crds.SetCABundle(ctx, direct, caBundle); err != nil {
			return err
		}
		log.Info("set the SMI CRDs' conversion caBundle to this replica's self-signed CA (smi2istio's CRDs only)")
	}
	return nil
}

// chooseSMIKinds reads the SMI CRDs (--smi-crds) and makes the versions to watch and where status
// goes the process's (controllers.UseSMIKinds), then adds the cache types to the scheme. It runs
// before the manager is made, with a direct client. It returns what watches the CRDs for a change
// of that choice (the process exits then, to start again with the new one).
func chooseSMIKinds(ctx context.Context, log logr.Logger, cfg *rest.Config, o options, local bool) (*controllers.SMICRDWatch, error) {
	mode := o.smiCRDs
	if local {
		mode = controllers.SMICRDsOwn // installCRDs installed smi2istio's
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	choice, err := controllers.DetectSMICRDs(ctx, direct, mode)
	if err != nil {
		return nil, err
	}
	if err := controllers.UseSMIKinds(choice); err != nil {
		return nil, err
	}
	addCacheTypes()
	for _, c := range choice {
		log.Info("SMI kind", "kind", c.Kind, "crd", c.CRD, "owner", c.Owner, "version", c.Version, "status", c.Status, "note", c.Message)
	}
	return &controllers.SMICRDWatch{Reader: direct, Mode: mode, Choice: choice, Interval: smiCRDWatchInterval}, nil
}

// smiCRDWatchInterval is how often the SMI CRDs are read again (five GETs).
const smiCRDWatchInterval = 30 * time.Second

// setupReconcilers registers the event recorder and every reconciler. The SMI2IstioConfig
// singleton (or its defaults) decides mode, regex policy, trust domain and membership; the config
// reconciler publishes them and the others wait for the first resolution.
func setupReconcilers(ctx context.Context, log logr.Logger, mgr ctrl.Manager, o options) error {
	shared := controllers.NewShared(o.clusterDomain)
	// Events are written from a bounded queue (internal/recorder): client-go's broadcaster would keep
	// a copy of each for six minutes.
	events, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("create events client: %w", err)
	}
	recorder := smirecorder.New(events.EventsV1(), mgr.GetScheme(), "smi2istio", eventQueue, log.WithName("events"))
	if err := mgr.Add(recorder); err != nil {
		return fmt.Errorf("add event recorder: %w", err)
	}
	cfgR := &controllers.ConfigReconciler{Client: mgr.GetClient(), Shared: shared, Recount: time.Minute, MeshConfigNamespaces: o.meshConfigNS}
	if err := cfgR.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up config controller: %w", err)
	}
	// SMI objects stored in versions no longer stored (OSM's) are rewritten, then those versions
	// dropped from the CRDs' storedVersions (reported on the config).
	// status.smiCRDs: whose CRDs, which versions, where status goes.
	if err := (&controllers.SMICRDReporter{Client: mgr.GetClient()}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up SMI CRD reporter: %w", err)
	}
	migration := &controllers.StorageMigrationReconciler{Client: mgr.GetClient(), Reader: mgr.GetAPIReader()}
	if err := migration.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up storage migration controller: %w", err)
	}
	// The reconcilers that write Istio's kinds need Istio's CRDs: without them, they are set up
	// once Istio is installed (no restart), and the config says what is missing meanwhile.
	disc, err := discovery.NewDiscoveryClientForConfig(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("create discovery client: %w", err)
	}
	setup := func(ctx context.Context) error { return setupMeshReconcilers(ctx, mgr, o, shared, recorder) }
	missing := missingIstioKinds(disc)
	if len(missing) == 0 {
		return setup(ctx)
	}
	log.Info("Istio's CRDs are not served: waiting for them (see the SMI2IstioConfig's IstioDetected condition)", "missing", missing)
	shared.SetIstioMissing(missing)
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Second):
			}
			missing := missingIstioKinds(disc)
			shared.SetIstioMissing(missing)
			if len(missing) > 0 {
				continue
			}
			log.Info("Istio's CRDs are served: starting the reconcilers that write Istio's objects")
			if err := setup(ctx); err != nil {
				return err
			}
			shared.PokeConfig()
			<-ctx.Done()
			return nil
		}
	}))
}

// setupMeshReconcilers registers the reconcilers that read and write Istio's kinds.
func setupMeshReconcilers(ctx context.Context, mgr ctrl.Manager, o options, shared *controllers.Shared, recorder *smirecorder.Recorder) error {
	ts := &controllers.TrafficSplitReconciler{Client: mgr.GetClient(), Recorder: recorder,
		Mesh: translate.Mesh{ClusterDomain: o.clusterDomain}, State: shared.Current, Resync: shared.Resync}
	if err := ts.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up TrafficSplit controller: %w", err)
	}
	// One index of pods and pod templates, read by both reconcilers that need workloads.
	workloads := cache.NewWorkloadIndex()
	access := &controllers.AccessReconciler{Client: mgr.GetClient(), Recorder: recorder, State: shared.Current, Resync: shared.Resync, Workloads: workloads}
	if err := access.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up TrafficTarget controller: %w", err)
	}
	for _, gvk := range []schema.GroupVersionKind{controllers.HTTPRouteGroupGVK, controllers.TCPRouteGVK, controllers.UDPRouteGVK} {
		routes := &controllers.RouteReconciler{Client: mgr.GetClient(), Recorder: recorder, GVK: gvk, State: shared.Current, Resync: shared.Resync}
		if err := routes.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up %s controller: %w", gvk.Kind, err)
		}
	}
	baseline := &controllers.BaselineReconciler{Client: mgr.GetClient(), State: shared.Current, Resync: shared.Resync, Workloads: workloads}
	if err := baseline.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up baseline controller: %w", err)
	}
	return nil
}

// istioKinds are the Istio kinds the operator writes.
var istioKinds = []schema.GroupVersionKind{controllers.VirtualServiceGVK, controllers.DestinationRuleGVK,
	controllers.AuthorizationPolicyGVK, controllers.PeerAuthenticationGVK, controllers.EnvoyFilterGVK}

// missingIstioKinds lists the Istio kinds the apiserver does not serve (asked afresh each time).
func missingIstioKinds(d discovery.DiscoveryInterface) []string {
	var missing []string
	for _, gvk := range istioKinds {
		served := false
		if list, err := d.ServerResourcesForGroupVersion(gvk.GroupVersion().String()); err == nil {
			for _, r := range list.APIResources {
				served = served || r.Kind == gvk.Kind
			}
		}
		if !served {
			missing = append(missing, gvk.Kind+"."+gvk.GroupVersion().String())
		}
	}
	return missing
}

func wantLocal(mode string) (bool, error) {
	switch mode {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "auto":
		// A cluster is configured by --kubeconfig, $KUBECONFIG, or running in a pod.
		if f := flag.Lookup("kubeconfig"); f != nil && f.Value.String() != "" {
			return false, nil
		}
		return os.Getenv("KUBECONFIG") == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "", nil
	default:
		return false, fmt.Errorf("--local-control-plane=%q: want auto, always or never", mode)
	}
}

func certMode(mode, dir string) (string, error) {
	switch mode {
	case "provided", "self-signed":
		return mode, nil
	case "auto":
		if _, err := os.Stat(filepath.Join(dir, certs.CertFile)); err == nil {
			return "provided", nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("inspect webhook certificate directory: %w", err)
		}
		return "self-signed", nil
	default:
		return "", fmt.Errorf("--webhook-cert-mode=%q: want auto, provided or self-signed", mode)
	}
}

// selfSignedWebhookCert covers the in-cluster Service names and the loopback address.
func selfSignedWebhookCert(host string) (*certs.Bundle, error) {
	svc, ns := crds.WebhookServiceName, crds.WebhookServiceNamespace
	if pns := os.Getenv("POD_NAMESPACE"); pns != "" {
		ns = pns
	}
	names := []string{svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local", "localhost"}
	ips := []net.IP{net.ParseIP("127.0.0.1")}
	if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
		ips = append(ips, ip)
	}
	return certs.SelfSigned(names, ips, time.Now(), 365*24*time.Hour)
}

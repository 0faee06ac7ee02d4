package deploytest

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/batchfleet/batchfleet/pkg/notify"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/submit"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// kedaKustomization is the overlay deploy/k8s-keda, decoded strictly.
type kedaKustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Resources []string `json:"resources"`
	Patches   []struct {
		Patch string `json:"patch"`
	} `json:"patches,omitempty"`
}

// scaledObject is the part of KEDA's ScaledObject the checks read; the
// schema (TestKubeconform) checks the rest.
type scaledObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type       string            `json:"type"`
			Name       string            `json:"name"`
			MetricType string            `json:"metricType"`
			Metadata   map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// kedaOverlay is deploy/k8s-keda: its base, what it deletes from it and the
// ScaledObjects it adds.
type kedaOverlay struct {
	k       kedaKustomization
	deletes map[string]bool // "Kind/name" of the base resources it removes
	objects []*scaledObject
}

const kedaBase = "../k8s"

func loadKEDA(dir string) (*kedaOverlay, problems) {
	var p problems
	o := &kedaOverlay{deletes: map[string]bool{}}
	src, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		p.add("keda: %v", err)
		return o, p
	}
	if err := unmarshalStrict(src, &o.k); err != nil {
		p.add("keda: kustomization.yaml: %v", err)
		return o, p
	}
	if !slices.Contains(o.k.Resources, kedaBase) {
		p.add("keda: kustomization.yaml does not build on %s", kedaBase)
	}
	for _, patch := range o.k.Patches {
		var del struct {
			Patch      string `json:"$patch"`
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := unmarshalStrict([]byte(patch.Patch), &del); err != nil || del.Patch != "delete" {
			p.add("keda: kustomization.yaml: a patch that is not a $patch: delete of one resource (%v)", err)
			continue
		}
		o.deletes[del.Kind+"/"+del.Metadata.Name] = true
	}
	listed := map[string]bool{}
	for _, r := range o.k.Resources {
		if r == kedaBase {
			continue
		}
		listed[r] = true
		src, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			p.add("keda: kustomization.yaml resource %s: %v", r, err)
			continue
		}
		for i, doc := range splitDocs(src) {
			so := &scaledObject{}
			if err := yaml.Unmarshal(doc, so); err != nil {
				p.add("keda: %s document %d: %v", r, i+1, err)
				continue
			}
			if so.APIVersion != "keda.sh/v1alpha1" || so.Kind != "ScaledObject" {
				p.add("keda: %s document %d: %s %s: the overlay only adds keda.sh/v1alpha1 ScaledObjects", r, i+1, so.APIVersion, so.Kind)
				continue
			}
			o.objects = append(o.objects, so)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		p.add("keda: %v", err)
	}
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".yaml") && n != "kustomization.yaml" && !listed[n] {
			p.add("keda: %s is not listed in kustomization.yaml resources", n)
		}
	}
	return o, p
}

// jsTarget is a JetStream stream and durable consumer.
type jsTarget struct{ stream, consumer string }

// workerConsumers are the durable consumers each worker reads, from the
// workers' own code (pkg/submit, pkg/notify consumer configurations, on
// the streams pkg/stream declares).
func workerConsumers(p *problems) map[string][]jsTarget {
	s := new(submit.Submitter)
	n := new(notify.Notifier)
	out := map[string][]jsTarget{}
	for worker, cs := range map[string][]struct {
		stream  string
		filter  string
		durable string
	}{
		"submitter": {
			{stream.Requests, s.ConsumerConfig().FilterSubject, s.ConsumerConfig().Durable},
			{stream.Work, s.RetryConsumerConfig().FilterSubject, s.RetryConsumerConfig().Durable},
		},
		"notifier": {{stream.Work, n.ConsumerConfig().FilterSubject, n.ConsumerConfig().Durable}},
	} {
		for _, c := range cs {
			cfg, err := stream.Settings{}.Config(c.stream)
			if err != nil || !slices.Contains(cfg.Subjects, c.filter) {
				p.add("keda: %s's consumer %s reads %s, which stream %s does not capture (%v)", worker, c.durable, c.filter, c.stream, err)
			}
			out[worker] = append(out[worker], jsTarget{c.stream, c.durable})
		}
	}
	return out
}

// kedaTriggers are the trigger metadata keys KEDA (v2.21) knows per scaler
// type, the ones the manifests must set marked true; a misspelt key would
// otherwise be ignored (the CRD allows any string map).
var kedaTriggers = map[string]map[string]bool{
	"nats-jetstream": {"natsServerMonitoringEndpoint": true, "account": true, "stream": true, "consumer": true, "lagThreshold": true,
		"accountID": false, "activationLagThreshold": false, "useHttps": false},
	"prometheus": {"serverAddress": true, "query": true, "threshold": true, "activationThreshold": false, "queryParameters": false,
		"namespace": false, "customHeaders": false, "ignoreNullValues": false, "unsafeSsl": false, "awsRegion": false, "timeout": false, "identityOwner": false},
	"cpu": {"value": true, "containerName": false},
}

// activeBatchesMetric is the gauge the pollers scale on (pkg/telemetry).
const activeBatchesMetric = "batchfleet_poll_sweep_active_batches"

var (
	metricName       = regexp.MustCompile(`\bbatchfleet_[a-z0-9_]+`)
	namespaceMatcher = regexp.MustCompile(`\bnamespace\s*=~?\s*"([^"]*)"`)
)

func checkKEDA(base *manifests, o *kedaOverlay) problems {
	var p problems
	ns := base.k.Namespace
	if o.k.Namespace != ns {
		p.add("keda: kustomization.yaml namespace %q, the base's is %q", o.k.Namespace, ns)
	}
	hpas := map[string]string{} // Deployment -> HPA, after the overlay's deletions
	for key := range o.deletes {
		kind, name, _ := strings.Cut(key, "/")
		if kind != "HorizontalPodAutoscaler" || base.hpas[name] == nil {
			p.add("keda: kustomization.yaml deletes %s, which is no HorizontalPodAutoscaler of the base", key)
		}
	}
	for name, h := range base.hpas {
		if !o.deletes["HorizontalPodAutoscaler/"+name] && h.Spec.ScaleTargetRef.Kind == "Deployment" {
			hpas[h.Spec.ScaleTargetRef.Name] = name
		}
	}
	metrics := registeredMetrics(&p)
	consumers := workerConsumers(&p)
	nats := natsMonitoring(&p, base)
	scaled := map[string]string{} // Deployment -> ScaledObject
	for _, so := range o.objects {
		where := "ScaledObject " + so.Metadata.Name
		ref := so.Spec.ScaleTargetRef
		d := base.deployments[ref.Name]
		if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || d == nil {
			p.add("keda: %s targets %s %s %s, which is not a Deployment of the base", where, ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		if other, ok := scaled[ref.Name]; ok {
			p.add("keda: %s and ScaledObject %s both target Deployment %s", where, other, ref.Name)
		}
		scaled[ref.Name] = so.Metadata.Name
		if h, ok := hpas[ref.Name]; ok {
			p.add("keda: HorizontalPodAutoscaler %s and %s both target Deployment %s: delete the HPA in kustomization.yaml", h, where, ref.Name)
		}
		lo, hi := ptrOr(so.Spec.MinReplicaCount, 0), ptrOr(so.Spec.MaxReplicaCount, 100)
		if lo < 2 || hi < lo {
			p.add("keda: %s: want 2 <= minReplicaCount (%d) <= maxReplicaCount (%d): recovery is done by the peers", where, lo, hi)
		}
		if r := ptrOr(d.Spec.Replicas, 1); r < lo || r > hi {
			p.add("keda: %s: Deployment %s's %d replicas are outside [%d, %d]", where, ref.Name, r, lo, hi)
		}
		var jsGot []jsTarget
		for i, tr := range so.Spec.Triggers {
			tw := where + " trigger " + cmpOr(tr.Name, strconv.Itoa(i))
			keys, ok := kedaTriggers[tr.Type]
			if !ok {
				p.add("keda: %s: type %q is not one the test knows (add its metadata keys to kedaTriggers)", tw, tr.Type)
				continue
			}
			for k := range tr.Metadata {
				if _, ok := keys[k]; !ok {
					p.add("keda: %s: metadata %s is not a %s setting", tw, k, tr.Type)
				}
			}
			for k, required := range keys {
				if required && tr.Metadata[k] == "" {
					p.add("keda: %s: metadata %s is not set", tw, k)
				}
			}
			md := tr.Metadata
			switch tr.Type {
			case "nats-jetstream":
				jsGot = append(jsGot, jsTarget{md["stream"], md["consumer"]})
				if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n <= 0 {
					p.add("keda: %s: lagThreshold %q is not a positive integer", tw, md["lagThreshold"])
				}
				if ep := md["natsServerMonitoringEndpoint"]; ep != nats.endpoint(ns) {
					p.add("keda: %s: natsServerMonitoringEndpoint %q, want the NATS headless Service's monitoring port %q", tw, ep, nats.endpoint(ns))
				}
				if !slices.Contains(nats.accounts, md["account"]) {
					p.add("keda: %s: account %q is not an account of nats.conf %q", tw, md["account"], nats.accounts)
				}
			case "prometheus":
				q := md["query"]
				names := metricName.FindAllString(q, -1)
				for _, n := range names {
					if !metrics[n] {
						p.add("keda: %s: query names %s, which the workers do not export (pkg/telemetry)", tw, n)
					}
				}
				if ref.Name == "poller" && !slices.Contains(names, activeBatchesMetric) {
					p.add("keda: %s: the pollers scale on the active batches (%s); the query does not read it", tw, activeBatchesMetric)
				}
				for _, m := range namespaceMatcher.FindAllStringSubmatch(q, -1) {
					if m[1] != ns {
						p.add("keda: %s: query selects namespace %q, the fleet runs in %q", tw, m[1], ns)
					}
				}
				if v, err := strconv.ParseFloat(md["threshold"], 64); err != nil || v <= 0 {
					p.add("keda: %s: threshold %q is not a positive number", tw, md["threshold"])
				}
			case "cpu":
				if v, err := strconv.Atoi(md["value"]); tr.MetricType != "Utilization" || err != nil || v <= 0 || v > 100 {
					p.add("keda: %s: want metricType Utilization and a value of 1-100 %%", tw)
				}
				for _, c := range d.Spec.Template.Spec.Containers {
					if c.Resources.Requests.Cpu().IsZero() {
						p.add("keda: %s scales on CPU utilization, but container %s has no CPU request", tw, c.Name)
					}
				}
			}
		}
		slices.SortFunc(jsGot, func(a, b jsTarget) int { return strings.Compare(a.stream+"/"+a.consumer, b.stream+"/"+b.consumer) })
		want := slices.Clone(consumers[ref.Name])
		slices.SortFunc(want, func(a, b jsTarget) int { return strings.Compare(a.stream+"/"+a.consumer, b.stream+"/"+b.consumer) })
		if !slices.Equal(jsGot, want) {
			p.add("keda: %s: nats-jetstream triggers on stream/consumer %v, want the worker's own %v", where, jsGot, want)
		}
	}
	for _, w := range workers {
		if _, ok := scaled[w]; !ok {
			p.add("keda: no ScaledObject targets Deployment %s", w)
		}
	}
	return p
}

// registeredMetrics are the metric names the workers export.
func registeredMetrics(p *problems) map[string]bool {
	reg := prometheus.NewRegistry()
	m := telemetry.NewMetrics(reg)
	// Vectors appear once they have a child: record one sweep.
	m.Swept("openai", nil, 1, time.Now())
	mfs, err := reg.Gather()
	if err != nil {
		p.add("keda: gathering the workers' metrics: %v", err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
	}
	return out
}

// natsMon is where KEDA reads JetStream's consumer lag.
type natsMon struct {
	service  string
	port     int32
	accounts []string
}

// endpoint is host:port of the headless Service's monitoring port.
func (n natsMon) endpoint(ns string) string {
	return net.JoinHostPort(n.service+"."+ns+".svc.cluster.local", strconv.Itoa(int(n.port)))
}

// natsMonitoring finds the NATS monitoring port and accounts: nats.conf's
// http_port, the container port serving it, and the headless Service port
// routing to it (KEDA reaches each server as nats-N.<service>).
func natsMonitoring(p *problems, m *manifests) natsMon {
	var out natsMon
	sts := m.statefulSets["nats"]
	cm := m.configMaps["nats-config"]
	if sts == nil || cm == nil || len(sts.Spec.Template.Spec.Containers) != 1 {
		p.add("keda: StatefulSet nats or ConfigMap nats-config is missing")
		return out
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString("POD_NAME: " + sts.Name + "-0\n" + cm.Data["nats.conf"]); err != nil {
		p.add("keda: nats.conf: %v", err)
		return out
	}
	out.accounts = []string{server.DEFAULT_GLOBAL_ACCOUNT} // "$G" without accounts
	if len(opts.Accounts) > 0 {
		out.accounts = nil
		for _, a := range opts.Accounts {
			out.accounts = append(out.accounts, a.Name)
		}
	}
	headless := m.services[sts.Spec.ServiceName]
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone {
		p.add("keda: StatefulSet nats has no headless Service")
		return out
	}
	out.service = headless.Name
	c := sts.Spec.Template.Spec.Containers[0]
	for _, sp := range headless.Spec.Ports {
		target := sp.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(sp.Port)
		}
		if opts.HTTPPort != 0 && int(containerPort(c, target)) == opts.HTTPPort {
			out.port = sp.Port
		}
	}
	if out.port == 0 {
		p.add("keda: Service %s has no port routing to NATS monitoring (http_port %d)", headless.Name, opts.HTTPPort)
	}
	return out
}

func TestKEDA(t *testing.T) {
	root := repoRoot(t)
	base, p := loadK8s(filepath.Join(root, "deploy", "k8s"))
	p.report(t)
	require.Empty(t, p)
	o, p := loadKEDA(filepath.Join(root, "deploy", "k8s-keda"))
	p.report(t)
	require.Empty(t, p)
	require.Len(t, o.objects, len(workers))
	checkKEDA(base, o).report(t)
}

// TestKEDACheckFails shows that the checks catch broken variants of the
// overlay.
func TestKEDACheckFails(t *testing.T) {
	root := repoRoot(t)
	hpaDelete := "  - patch: |-\n      $patch: delete\n      apiVersion: autoscaling/v2\n      kind: HorizontalPodAutoscaler\n      metadata:\n        name: poller\n"
	for _, tc := range []struct {
		name, file, old, new string
		want                 []string
	}{
		{"HPA kept", "k8s-keda/kustomization.yaml", hpaDelete, "", []string{"HorizontalPodAutoscaler poller and ScaledObject poller both target Deployment poller"}},
		{"no base", "k8s-keda/kustomization.yaml", "  - ../k8s\n", "", []string{"does not build on ../k8s"}},
		{"unlisted", "k8s-keda/kustomization.yaml", "  - scaledobjects.yaml\n", "", []string{"scaledobjects.yaml is not listed"}},
		{"missing target", "k8s-keda/scaledobjects.yaml", "    name: notifier\n", "    name: notifiers\n", []string{"ScaledObject notifier targets apps/v1 Deployment notifiers"}},
		{"consumer name", "k8s-keda/scaledobjects.yaml", "consumer: submitters", "consumer: submitter", []string{"ScaledObject submitter", "want the worker's own"}},
		{"stream name", "k8s-keda/scaledobjects.yaml", "stream: BATCHFLEET_WORK\n        consumer: notifiers", "stream: BATCH_WORK\n        consumer: notifiers", []string{"ScaledObject notifier", "BATCH_WORK"}},
		{"metadata typo", "k8s-keda/scaledobjects.yaml", `lagThreshold: "8"`, `lagTreshold: "8"`, []string{"metadata lagTreshold is not a nats-jetstream setting"}},
		{"account", "k8s-keda/scaledobjects.yaml", `account: "$G"`, `account: "BATCHFLEET"`, []string{"account \"BATCHFLEET\""}},
		{"endpoint", "k8s-keda/scaledobjects.yaml", "nats-headless.batchfleet.svc.cluster.local:8222", "nats.batchfleet.svc.cluster.local:8222", []string{"natsServerMonitoringEndpoint"}},
		{"metric name", "k8s-keda/scaledobjects.yaml", "sum(batchfleet_poll_sweep_active_batches{", "sum(batchfleet_poll_active_batches{", []string{"batchfleet_poll_active_batches", "do not export"}},
		{"query namespace", "k8s-keda/scaledobjects.yaml", `active_batches{namespace="batchfleet"}`, `active_batches{namespace="default"}`, []string{"namespace \"default\""}},
		{"min replicas", "k8s-keda/scaledobjects.yaml", "  minReplicaCount: 2\n", "  minReplicaCount: 1\n", []string{"ScaledObject submitter", "minReplicaCount (1)"}},
		{"unknown trigger", "k8s-keda/scaledobjects.yaml", "    - type: cpu\n", "    - type: memory\n", []string{"type \"memory\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			mutated := false
			for _, sub := range []string{"k8s", "k8s-keda"} {
				entries, err := os.ReadDir(filepath.Join(root, "deploy", sub))
				require.NoError(t, err)
				require.NoError(t, os.Mkdir(filepath.Join(tmp, sub), 0o755))
				for _, e := range entries {
					b, err := os.ReadFile(filepath.Join(root, "deploy", sub, e.Name()))
					require.NoError(t, err)
					if sub+"/"+e.Name() == tc.file {
						require.Contains(t, string(b), tc.old)
						b = []byte(strings.Replace(string(b), tc.old, tc.new, 1))
						mutated = true
					}
					require.NoError(t, os.WriteFile(filepath.Join(tmp, sub, e.Name()), b, 0o644))
				}
			}
			require.True(t, mutated, tc.file)
			base, p := loadK8s(filepath.Join(tmp, "k8s"))
			require.Empty(t, p)
			o, p := loadKEDA(filepath.Join(tmp, "k8s-keda"))
			if len(p) == 0 {
				p = checkKEDA(base, o)
			}
			requireProblem(t, p, tc.want...)
		})
	}
}

package deploytest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization the manifests use.
// It is decoded strictly: a field kustomize has but this struct lacks fails
// the test, so add it here when a manifest starts using it.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// kinds maps apiVersion/kind to the typed struct a document decodes into.
// A kind not listed here fails: add it with its Go type.
var kinds = map[string]func() any{
	"v1/Namespace":                           func() any { return new(corev1.Namespace) },
	"v1/ConfigMap":                           func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                              func() any { return new(corev1.Secret) },
	"v1/Service":                             func() any { return new(corev1.Service) },
	"apps/v1/Deployment":                     func() any { return new(appsv1.Deployment) },
	"apps/v1/StatefulSet":                    func() any { return new(appsv1.StatefulSet) },
	"policy/v1/PodDisruptionBudget":          func() any { return new(policyv1.PodDisruptionBudget) },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
}

// decodeStrict decodes one YAML document into its typed Kubernetes struct,
// failing on unknown or duplicate fields and on wrong types.
func decodeStrict(doc []byte) (metav1.TypeMeta, any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return tm, nil, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return tm, nil, fmt.Errorf("apiVersion %q kind %q is not one the test knows (add it to kinds)", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	return tm, obj, unmarshalStrict(doc, obj)
}

// unmarshalStrict decodes YAML the way kubectl sends it to the API server:
// converted to JSON without looking at the target type (so `3` where a
// string belongs fails, as the API server rejects it), duplicate keys
// rejected, then decoded refusing unknown fields.
func unmarshalStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one document")
	}
	return nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// splitDocs splits a YAML stream into its non-empty documents.
func splitDocs(src []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(src), -1) {
		empty := true
		for line := range strings.SplitSeq(d, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// manifests is everything kustomization.yaml lists, decoded.
type manifests struct {
	k            kustomization
	namespaces   map[string]*corev1.Namespace
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	services     map[string]*corev1.Service
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	pdbs         map[string]*policyv1.PodDisruptionBudget
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
}

// loadK8s reads dir/kustomization.yaml and every resource it lists.
func loadK8s(dir string) (*manifests, problems) {
	var p problems
	m := &manifests{
		namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, services: map[string]*corev1.Service{},
		deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
	}
	src, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		p.add("k8s: %v", err)
		return m, p
	}
	if err := unmarshalStrict(src, &m.k); err != nil {
		p.add("k8s: kustomization.yaml: %v", err)
		return m, p
	}
	if m.k.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.k.Kind != "Kustomization" {
		p.add("k8s: kustomization.yaml: apiVersion %q kind %q", m.k.APIVersion, m.k.Kind)
	}
	listed := map[string]bool{}
	for _, r := range m.k.Resources {
		if listed[r] {
			p.add("k8s: kustomization.yaml lists %s twice", r)
		}
		listed[r] = true
		src, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			p.add("k8s: kustomization.yaml resource %s: %v", r, err)
			continue
		}
		for i, doc := range splitDocs(src) {
			tm, obj, err := decodeStrict(doc)
			if err != nil {
				p.add("k8s: %s document %d (%s): %v", r, i+1, tm.Kind, err)
				continue
			}
			var meta *metav1.ObjectMeta
			switch o := obj.(type) {
			case *corev1.Namespace:
				meta = &o.ObjectMeta
				dupe(&p, r, tm.Kind, o.Name, m.namespaces)
				m.namespaces[o.Name] = o
			case *corev1.ConfigMap:
				meta = &o.ObjectMeta
				dupe(&p, r, tm.Kind, o.Name, m.configMaps)
				m.configMaps[o.Name] = o
			case *corev1.Secret:
				meta = &o.ObjectMeta
				dupe(&p, r, tm.Kind, o.Name, m.secrets)
				m.secrets[o.Name] = o
			case *corev1.Service:
				meta = &o.ObjectMeta
				dupe(&p, r, tm.Kind, o.Name, m.services)
				m.services[o.Name] = o
			case *appsv1.Deployment:
				meta = &o.ObjectMeta
				dupe(&p, r, tm.Kind, o.Name, m.deployments)
				m.deployments[o.Name] = o
			case *appsv1.StatefulSet:
				meta = &o.ObjectMeta
				dupe(&p, r, tm.Kind, o.Name, m.statefulSets)
				m.statefulSets[o.Name] = o
			case *policyv1.PodDisruptionBudget:
				meta = &o.ObjectMeta
				dupe(&p, r, tm.Kind, o.Name, m.pdbs)
				m.pdbs[o.Name] = o
			case *autoscalingv2.HorizontalPodAutoscaler:
				meta = &o.ObjectMeta
				dupe(&p, r, tm.Kind, o.Name, m.hpas)
				m.hpas[o.Name] = o
			}
			if meta.Name == "" {
				p.add("k8s: %s document %d: %s has no metadata.name", r, i+1, tm.Kind)
			}
			if meta.Namespace != "" && meta.Namespace != m.k.Namespace {
				p.add("k8s: %s: %s %s is in namespace %q, kustomization.yaml sets %q", r, tm.Kind, meta.Name, meta.Namespace, m.k.Namespace)
			}
		}
	}
	// Every manifest in the directory is deployed: none is forgotten.
	entries, err := os.ReadDir(dir)
	if err != nil {
		p.add("k8s: %v", err)
	}
	for _, e := range entries {
		if n := e.Name(); (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) && n != "kustomization.yaml" && !listed[n] {
			p.add("k8s: %s is not listed in kustomization.yaml resources", n)
		}
	}
	return m, p
}

func dupe[T any](p *problems, file, kind, name string, seen map[string]T) {
	if _, ok := seen[name]; ok {
		p.add("k8s: %s: %s %s is defined twice", file, kind, name)
	}
}

// workload is a Deployment or StatefulSet as the checks see it.
type workload struct {
	kind, name string
	replicas   int32
	selector   *metav1.LabelSelector
	template   corev1.PodTemplateSpec
}

func (m *manifests) workloads() []workload {
	var out []workload
	for _, d := range m.deployments {
		out = append(out, workload{"Deployment", d.Name, ptrOr(d.Spec.Replicas, 1), d.Spec.Selector, d.Spec.Template})
	}
	for _, s := range m.statefulSets {
		out = append(out, workload{"StatefulSet", s.Name, ptrOr(s.Spec.Replicas, 1), s.Spec.Selector, s.Spec.Template})
	}
	slices.SortFunc(out, func(a, b workload) int { return cmp.Compare(a.kind+a.name, b.kind+b.name) })
	return out
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// selected returns the workloads whose pods sel (a label selector) selects.
func (m *manifests) selected(sel labels.Selector) []workload {
	var out []workload
	for _, w := range m.workloads() {
		if !sel.Empty() && sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// containerPort resolves a probe or Service port (a number or a port name) to
// the container's port number (0 if the container does not declare it).
func containerPort(c corev1.Container, port intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

func podPort(spec corev1.PodSpec, port intstr.IntOrString) int32 {
	for _, c := range spec.Containers {
		if n := containerPort(c, port); n != 0 {
			return n
		}
	}
	return 0
}

// env resolves a container's environment the way the kubelet does, from
// envFrom and env (ConfigMap and Secret references included).
func (m *manifests) env(p *problems, where string, c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := m.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				p.add("k8s: %s envFrom ConfigMap %s does not exist", where, ef.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			s, ok := m.secrets[ef.SecretRef.Name]
			if !ok {
				p.add("k8s: %s envFrom Secret %s does not exist", where, ef.SecretRef.Name)
				continue
			}
			for k, v := range secretKeys(s) {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := "", false
			if cm := m.configMaps[ref.Name]; cm != nil {
				v, ok = cm.Data[ref.Key]
			}
			if !ok {
				p.add("k8s: %s env %s: ConfigMap %s key %s does not exist", where, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := "", false
			if s := m.secrets[ref.Name]; s != nil {
				v, ok = secretKeys(s)[ref.Key]
			}
			if !ok {
				p.add("k8s: %s env %s: Secret %s key %s does not exist", where, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		default: // fieldRef, resourceFieldRef: known only at run time
			env[e.Name] = "runtime"
		}
	}
	return env
}

func secretKeys(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

const workerImage = "ghcr.io/batchfleet/batchfleet"

// checkK8s checks the decoded manifests against each other, the image and
// the workers' configuration.
func checkK8s(m *manifests, cmds map[string]bool) problems {
	var p problems
	if _, ok := m.namespaces[m.k.Namespace]; m.k.Namespace == "" || !ok {
		p.add("k8s: kustomization.yaml namespace %q is not created by a Namespace manifest", m.k.Namespace)
	}

	// Workloads: selectors, volumes, probes, security.
	for _, w := range m.workloads() {
		where := w.kind + " " + w.name
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || w.selector == nil || sel.Empty() {
			p.add("k8s: %s: bad or empty selector: %v", where, err)
		} else if !sel.Matches(labels.Set(w.template.Labels)) {
			p.add("k8s: %s: selector %s does not match its template labels %v", where, sel, w.template.Labels)
		}
		spec := w.template.Spec
		volumes := map[string]bool{}
		for _, v := range spec.Volumes {
			volumes[v.Name] = true
			if v.ConfigMap != nil && m.configMaps[v.ConfigMap.Name] == nil {
				p.add("k8s: %s volume %s: ConfigMap %s does not exist", where, v.Name, v.ConfigMap.Name)
			}
			if v.Secret != nil && m.secrets[v.Secret.SecretName] == nil {
				p.add("k8s: %s volume %s: Secret %s does not exist", where, v.Name, v.Secret.SecretName)
			}
		}
		if sts := m.statefulSets[w.name]; w.kind == "StatefulSet" {
			for _, c := range sts.Spec.VolumeClaimTemplates {
				volumes[c.Name] = true
			}
		}
		if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
			p.add("k8s: %s: pod securityContext.runAsNonRoot is not true", where)
		}
		for _, c := range spec.Containers {
			cw := where + " container " + c.Name
			for _, vm := range c.VolumeMounts {
				if !volumes[vm.Name] {
					p.add("k8s: %s mounts undeclared volume %s", cw, vm.Name)
				}
			}
			for name, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
				switch {
				case probe == nil:
					if name != "startup" {
						p.add("k8s: %s has no %s probe", cw, name)
					}
				case probe.HTTPGet != nil:
					if containerPort(c, probe.HTTPGet.Port) == 0 {
						p.add("k8s: %s %s probe port %s is not a declared container port", cw, name, probe.HTTPGet.Port.String())
					}
				case probe.TCPSocket != nil:
					if containerPort(c, probe.TCPSocket.Port) == 0 {
						p.add("k8s: %s %s probe port %s is not a declared container port", cw, name, probe.TCPSocket.Port.String())
					}
				case probe.Exec == nil && probe.GRPC == nil:
					p.add("k8s: %s %s probe has no handler", cw, name)
				}
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				p.add("k8s: %s: want readOnlyRootFilesystem true and allowPrivilegeEscalation false", cw)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				p.add("k8s: %s: want cpu and memory requests and a memory limit", cw)
			}
			if !strings.Contains(c.Image, ":") {
				p.add("k8s: %s: image %q has no tag", cw, c.Image)
			}
			m.env(&p, cw, c) // reports missing references
		}
	}

	// The workers: the three Deployments running the batchfleet image.
	for _, name := range workers {
		d, ok := m.deployments[name]
		if !ok {
			p.add("k8s: Deployment %s is missing", name)
			continue
		}
		where := "Deployment " + name
		if r := ptrOr(d.Spec.Replicas, 1); r != 2 {
			p.add("k8s: %s has %d replicas, want 2", where, r)
		}
		spec := d.Spec.Template.Spec
		if g := ptrOr(spec.TerminationGracePeriodSeconds, 30); g != 15 {
			p.add("k8s: %s terminationGracePeriodSeconds %d, want 15", where, g)
		}
		if len(spec.Containers) != 1 {
			p.add("k8s: %s: want one container, got %d", where, len(spec.Containers))
			continue
		}
		c := spec.Containers[0]
		if repo, _, _ := strings.Cut(c.Image, ":"); repo != workerImage {
			p.add("k8s: %s image %q, want %s:<tag>", where, c.Image, workerImage)
		}
		if want := binDir + name; len(c.Command) != 1 || c.Command[0] != want {
			p.add("k8s: %s command %q, want [%q]", where, c.Command, want)
		}
		if !cmds[name] {
			p.add("k8s: %s: there is no cmd/%s for the Dockerfile to build", where, name)
		}
		env := m.env(&p, where, c)
		checkWorkerEnv(&p, "k8s", name, env)
		metrics, err := addrPort(env["METRICS_ADDR"])
		if err != nil {
			p.add("k8s: %s METRICS_ADDR %q: %v", where, env["METRICS_ADDR"], err)
		}
		for name, want := range map[string]struct {
			probe *corev1.Probe
			path  string
		}{"liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
			probe := want.probe
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want.path || int(containerPort(c, probe.HTTPGet.Port)) != metrics {
				p.add("k8s: %s %s probe is not GET %s on METRICS_ADDR port %d", where, name, want.path, metrics)
			}
		}
		if u, err := url.Parse(env["NATS_URL"]); err != nil || m.services[u.Hostname()] == nil {
			p.add("k8s: %s NATS_URL %q does not name a Service", where, env["NATS_URL"])
		}
		if u, err := url.Parse(env["REDIS_URL"]); err != nil || m.services[u.Hostname()] == nil {
			p.add("k8s: %s REDIS_URL %q does not name a Service", where, env["REDIS_URL"])
		}
		if sts := m.statefulSets["nats"]; sts != nil && env["STREAM_REPLICAS"] != strconv.Itoa(int(ptrOr(sts.Spec.Replicas, 1))) {
			p.add("k8s: %s STREAM_REPLICAS %q, want the NATS replica count %d", where, env["STREAM_REPLICAS"], ptrOr(sts.Spec.Replicas, 1))
		}
		if name == "poller" {
			port, err := addrPort(env["VENDOR_WEBHOOK_ADDR"])
			if err != nil || podPort(spec, intstr.FromInt32(int32(port))) == 0 {
				p.add("k8s: %s VENDOR_WEBHOOK_ADDR %q is not a declared container port", where, env["VENDOR_WEBHOOK_ADDR"])
			}
			found := false
			for _, s := range m.services {
				for _, sp := range s.Spec.Ports {
					if s.Spec.Selector != nil && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) &&
						int(podPort(spec, sp.TargetPort)) == port {
						found = true
					}
				}
			}
			if !found {
				p.add("k8s: no Service routes to the pollers' VENDOR_WEBHOOK_ADDR port %d", port)
			}
		}
		if _, ok := m.pdbs[name]; !ok {
			p.add("k8s: %s has no PodDisruptionBudget named %s", where, name)
		}
	}

	// Services route to pods that declare the target port.
	for _, s := range m.services {
		if len(s.Spec.Selector) == 0 {
			p.add("k8s: Service %s has no selector", s.Name)
			continue
		}
		ws := m.selected(labels.SelectorFromSet(s.Spec.Selector))
		if len(ws) == 0 {
			p.add("k8s: Service %s selects no workload", s.Name)
		}
		for _, w := range ws {
			for _, sp := range s.Spec.Ports {
				target := sp.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(sp.Port)
				}
				if podPort(w.template.Spec, target) == 0 {
					p.add("k8s: Service %s port %s: targetPort %s is not declared by %s %s", s.Name, sp.Name, target.String(), w.kind, w.name)
				}
			}
		}
	}

	// Disruption budgets select something and leave room for a drain.
	for _, pdb := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || pdb.Spec.Selector == nil {
			p.add("k8s: PodDisruptionBudget %s: bad selector: %v", pdb.Name, err)
			continue
		}
		ws := m.selected(sel)
		if len(ws) != 1 {
			p.add("k8s: PodDisruptionBudget %s selects %d workloads, want 1", pdb.Name, len(ws))
			continue
		}
		if pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.Type == intstr.Int && pdb.Spec.MinAvailable.IntVal >= ws[0].replicas {
			p.add("k8s: PodDisruptionBudget %s minAvailable %d blocks every drain of %d replicas", pdb.Name, pdb.Spec.MinAvailable.IntVal, ws[0].replicas)
		}
	}

	// The pollers' autoscaler.
	hpa, ok := m.hpas["poller"]
	if !ok {
		p.add("k8s: HorizontalPodAutoscaler poller is missing")
	} else {
		ref := hpa.Spec.ScaleTargetRef
		d := m.deployments[ref.Name]
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || d == nil {
			p.add("k8s: HorizontalPodAutoscaler poller targets %s %s %s, which is not a Deployment here", ref.APIVersion, ref.Kind, ref.Name)
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *cmp.Or(hpa.Spec.MinReplicas, new(int32)) {
			p.add("k8s: HorizontalPodAutoscaler poller: want 2 <= minReplicas <= maxReplicas")
		}
		cpu := false
		for _, metric := range hpa.Spec.Metrics {
			if metric.Type == autoscalingv2.ResourceMetricSourceType && metric.Resource != nil && metric.Resource.Name == corev1.ResourceCPU {
				cpu = true
			}
		}
		if !cpu {
			p.add("k8s: HorizontalPodAutoscaler poller does not scale on CPU")
		}
		if d != nil {
			for _, c := range d.Spec.Template.Spec.Containers {
				if c.Resources.Requests.Cpu().IsZero() {
					p.add("k8s: HorizontalPodAutoscaler poller scales on CPU utilization, but container %s has no CPU request", c.Name)
				}
			}
		}
	}

	// NATS: a JetStream cluster whose routes are its own pods.
	checkNATS(&p, m)

	// Redis.
	if d, ok := m.deployments["redis"]; !ok {
		p.add("k8s: Deployment redis is missing")
	} else if c := d.Spec.Template.Spec.Containers; len(c) != 1 || !strings.HasPrefix(c[0].Image, "redis:7") {
		p.add("k8s: Deployment redis: want one redis:7 container")
	}
	for _, img := range m.k.Images {
		if img.Name != workerImage {
			p.add("k8s: kustomization.yaml images: %s is not an image the manifests use", img.Name)
		}
	}
	return p
}

func checkNATS(p *problems, m *manifests) {
	sts, ok := m.statefulSets["nats"]
	if !ok {
		p.add("k8s: StatefulSet nats is missing")
		return
	}
	replicas := ptrOr(sts.Spec.Replicas, 1)
	if replicas != 3 {
		p.add("k8s: StatefulSet nats has %d replicas, want 3", replicas)
	}
	headless, ok := m.services[sts.Spec.ServiceName]
	if !ok || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		p.add("k8s: StatefulSet nats serviceName %q: want a headless Service (clusterIP None, publishNotReadyAddresses)", sts.Spec.ServiceName)
	}
	var data *corev1.PersistentVolumeClaim
	for i := range sts.Spec.VolumeClaimTemplates {
		data = &sts.Spec.VolumeClaimTemplates[i]
	}
	if data == nil {
		p.add("k8s: StatefulSet nats has no volumeClaimTemplates for the JetStream file store")
		return
	}
	spec := sts.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		p.add("k8s: StatefulSet nats: want one container")
		return
	}
	c := spec.Containers[0]
	if major, minor, ok := imageVersion(c.Image); !ok || major < 2 || (major == 2 && minor < 10) {
		p.add("k8s: StatefulSet nats image %q: want nats 2.10 or newer (pinned)", c.Image)
	}
	// Find the configuration file the command names, in its ConfigMap volume.
	var confPath string
	for i, a := range c.Command {
		if (a == "--config" || a == "-c") && i+1 < len(c.Command) {
			confPath = c.Command[i+1]
		}
	}
	var conf string
	mounts := map[string]string{} // mount path -> volume
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm.Name
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap == nil || mounts[filepath.Dir(confPath)] != v.Name {
			continue
		}
		if cm := m.configMaps[v.ConfigMap.Name]; cm != nil {
			conf = cm.Data[filepath.Base(confPath)]
		}
	}
	if conf == "" {
		p.add("k8s: StatefulSet nats: command %q names no configuration file found in a mounted ConfigMap", c.Command)
		return
	}
	podEnv := map[string]bool{}
	for _, e := range c.Env {
		podEnv[e.Name] = true
	}
	if strings.Contains(conf, "$POD_NAME") && !podEnv["POD_NAME"] {
		p.add("k8s: StatefulSet nats: nats.conf uses $POD_NAME but the container does not set it")
	}
	// nats-server resolves $POD_NAME from the environment; the variable
	// defined here stands in for pod 0.
	opts := &server.Options{}
	if err := opts.ProcessConfigString("POD_NAME: " + sts.Name + "-0\n" + conf); err != nil {
		p.add("k8s: nats.conf: nats-server rejects it: %v", err)
		return
	}
	if opts.ServerName != sts.Name+"-0" {
		p.add("k8s: nats.conf: server_name %q, want the pod name ($POD_NAME)", opts.ServerName)
	}
	if !opts.JetStream {
		p.add("k8s: nats.conf: JetStream is off")
	}
	if mounts[opts.StoreDir] != data.Name {
		p.add("k8s: nats.conf: JetStream store_dir %q is not the mount of the %s PersistentVolumeClaim", opts.StoreDir, data.Name)
	}
	if size := data.Spec.Resources.Requests[corev1.ResourceStorage]; opts.JetStreamMaxStore <= 0 || resource.NewQuantity(opts.JetStreamMaxStore, resource.BinarySI).Cmp(size) > 0 {
		p.add("k8s: nats.conf: max_file_store %d does not fit the %s PersistentVolumeClaim (%s)", opts.JetStreamMaxStore, data.Name, size.String())
	}
	if opts.PidFile != "" && mounts[filepath.Dir(opts.PidFile)] == "" {
		p.add("k8s: nats.conf: pid_file %s is on the read-only root filesystem", opts.PidFile)
	}
	if opts.Cluster.Name == "" {
		p.add("k8s: nats.conf: cluster has no name")
	}
	var want, got []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("%s-%d.%s:%d", sts.Name, i, sts.Spec.ServiceName, opts.Cluster.Port))
	}
	for _, u := range opts.Routes {
		got = append(got, u.Host)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		p.add("k8s: nats.conf: cluster routes %v, want the StatefulSet's pods %v", got, want)
	}
	for name, port := range map[string]int{"client": opts.Port, "cluster": opts.Cluster.Port, "monitor": opts.HTTPPort} {
		if int(containerPort(c, intstr.FromString(name))) != port {
			p.add("k8s: StatefulSet nats: container port %s is not the configured %d", name, port)
		}
	}
}

func TestK8s(t *testing.T) {
	root := repoRoot(t)
	m, p := loadK8s(filepath.Join(root, "deploy", "k8s"))
	p.report(t)
	require.Empty(t, p)
	checkK8s(m, commands(t, root)).report(t)
}

// TestK8sStrictDecode shows that a misspelt or mistyped field fails.
func TestK8sStrictDecode(t *testing.T) {
	root := repoRoot(t)
	src, err := os.ReadFile(filepath.Join(root, "deploy", "k8s", "poller.yaml"))
	require.NoError(t, err)
	deployment := string(splitDocs(src)[0])
	_, _, err = decodeStrict([]byte(deployment))
	require.NoError(t, err)
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown field", "terminationGracePeriodSeconds: 15", "terminationGracePeriodSecond: 15", "terminationGracePeriodSecond"},
		{"nested unknown field", "readinessProbe:", "readynessProbe:", "readynessProbe"},
		{"wrong type", "containerPort: 9090", `containerPort: "9090"`, "containerPort"},
		{"duplicate field", "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  revisionHistoryLimit: 6\n", "revisionHistoryLimit"},
		{"bad quantity", "memory: 512Mi", "memory: 512MB-ish", "quantities"},
		{"unknown kind", "kind: Deployment", "kind: Deploymnet", "Deploymnet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Contains(t, deployment, tc.old)
			_, _, err := decodeStrict([]byte(strings.Replace(deployment, tc.old, tc.new, 1)))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestK8sCheckFails shows that the cross-checks catch broken variants of
// the real manifests.
func TestK8sCheckFails(t *testing.T) {
	root := repoRoot(t)
	cmds := commands(t, root)
	dir := filepath.Join(root, "deploy", "k8s")
	for _, tc := range []struct {
		name, file, old, new string
		want                 []string
	}{
		{"unlisted resource", "kustomization.yaml", "  - notifier.yaml\n", "", []string{"notifier.yaml is not listed"}},
		{"missing resource", "kustomization.yaml", "  - notifier.yaml\n", "  - notifier.yaml\n  - metrics.yaml\n", []string{"metrics.yaml"}},
		{"kustomization typo", "kustomization.yaml", "resources:", "resource:", []string{"kustomization.yaml"}},
		{"selector", "submitter.yaml", "  selector:\n    matchLabels:\n      app.kubernetes.io/name: batchfleet\n      app.kubernetes.io/component: submitter",
			"  selector:\n    matchLabels:\n      app.kubernetes.io/name: batchfleet\n      app.kubernetes.io/component: submiter", []string{"Deployment submitter", "does not match"}},
		{"probe port", "notifier.yaml", "          livenessProbe:\n            httpGet:\n              path: /healthz\n              port: metrics",
			"          livenessProbe:\n            httpGet:\n              path: /healthz\n              port: metric", []string{"notifier", "liveness probe port metric"}},
		{"no REDIS_URL", "config.yaml", "  REDIS_URL: \"redis://redis:6379/0\"\n", "", []string{"REDIS_URL is not set"}},
		{"bad config value", "config.yaml", `POLL_MAX_INTERVAL: "5m"`, `POLL_MAX_INTERVAL: "5 minutes"`, []string{"POLL_MAX_INTERVAL"}},
		{"non-string config value", "config.yaml", `STREAM_REPLICAS: "3"`, `STREAM_REPLICAS: 3`, []string{"config.yaml", "ConfigMap"}},
		{"secret key", "secret.yaml", "  WEBHOOK_SECRET:", "  WEBHOOK_SECRETS:", []string{"Secret batchfleet-secrets key WEBHOOK_SECRET does not exist"}},
		{"webhook service", "poller.yaml", "      targetPort: vendor-webhook", "      targetPort: 8091", []string{"poller-webhooks", "8091"}},
		{"nats routes", "nats.yaml", "        nats://nats-2.nats-headless:6222\n", "", []string{"cluster routes"}},
		{"nats conf", "nats.yaml", "    jetstream {", "    jetstrem {", []string{"nats.conf"}},
		{"nats store", "nats.yaml", "      store_dir: /data", "      store_dir: /var/lib/nats", []string{"store_dir"}},
		{"grace period", "poller.yaml", "terminationGracePeriodSeconds: 15", "terminationGracePeriodSeconds: 5", []string{"terminationGracePeriodSeconds 5"}},
		{"command", "notifier.yaml", `command: ["/usr/local/bin/notifier"]`, `command: ["/usr/local/bin/notify"]`, []string{"Deployment notifier command"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				require.NoError(t, err)
				if e.Name() == tc.file {
					require.Contains(t, string(b), tc.old)
					b = []byte(strings.Replace(string(b), tc.old, tc.new, 1))
				}
				require.NoError(t, os.WriteFile(filepath.Join(tmp, e.Name()), b, 0o644))
			}
			m, p := loadK8s(tmp)
			if len(p) == 0 {
				p = checkK8s(m, cmds)
			}
			requireProblem(t, p, tc.want...)
		})
	}
}

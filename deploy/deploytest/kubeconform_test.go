package deploytest

import (
	"bytes"
	"cmp"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/yannh/kubeconform/pkg/validator"
)

// kubernetesVersion names the directory of the core schemas
// (deploy/schemas/kubernetes/v<version>-standalone-strict), generated from
// that release's OpenAPI document (deploy/schemas/README.md).
const kubernetesVersion = "1.37.2"

// kubeconformValidator validates against the schemas kept in the
// repository only: the core kinds in kubeconform's -standalone-strict
// flavour (additionalProperties:false everywhere, so an unknown field
// fails) and the custom resources converted from their CRDs. There is no
// HTTP location, and the schemas reference nothing (TestSchemasSelfContained),
// so nothing is downloaded.
func kubeconformValidator(t *testing.T) validator.Validator {
	t.Helper()
	schemas := filepath.Join(repoRoot(t), "deploy", "schemas")
	v, err := validator.New([]string{
		filepath.Join(schemas, "kubernetes", "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}", "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
		filepath.Join(schemas, "crds", "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
	}, validator.Opts{Strict: true, KubernetesVersion: kubernetesVersion})
	require.NoError(t, err)
	return v
}

// kubeconform validates every resource of a YAML stream; it returns the
// problems and the number of resources found valid.
func kubeconform(v validator.Validator, name string, src []byte) (problems, int) {
	var p problems
	valid := 0
	for _, r := range v.Validate(name, io.NopCloser(bytes.NewReader(src))) {
		what := name
		if sig, err := r.Resource.Signature(); err == nil && sig.Kind != "" {
			what += ": " + sig.Kind + " " + sig.Name
		}
		switch r.Status {
		case validator.Valid:
			valid++
		case validator.Empty:
		case validator.Invalid:
			for _, e := range r.ValidationErrors {
				p.add("kubeconform: %s: %s: %s", what, cmp.Or(e.Path, "/"), e.Msg)
			}
			if len(r.ValidationErrors) == 0 {
				p.add("kubeconform: %s: %v", what, r.Err)
			}
		default: // Error, Skipped (nothing is skipped: no SkipKinds, missing schemas fail)
			p.add("kubeconform: %s: status %d: %v", what, r.Status, r.Err)
		}
	}
	return p, valid
}

// manifestFiles lists the Kubernetes manifests under dir: every .yaml/.yml
// file except kustomization.yaml (kustomize's own configuration, no
// Kubernetes resource: TestK8s and TestKEDA decode those strictly).
func manifestFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n := d.Name()
		if !d.IsDir() && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) && n != "kustomization.yaml" {
			files = append(files, path)
		}
		return nil
	}))
	return files
}

// kubeconformDir validates every manifest under dir.
func kubeconformDir(t *testing.T, v validator.Validator, dir string) (problems, map[string]int) {
	t.Helper()
	var p problems
	valid := map[string]int{}
	for _, f := range manifestFiles(t, dir) {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		rel, err := filepath.Rel(dir, f)
		require.NoError(t, err)
		fp, n := kubeconform(v, rel, src)
		p = append(p, fp...)
		valid[rel] = n
	}
	return p, valid
}

// TestKubeconform: every manifest under deploy/ passes kubeconform -strict
// against the in-repository schemas.
func TestKubeconform(t *testing.T) {
	deploy := filepath.Join(repoRoot(t), "deploy")
	p, valid := kubeconformDir(t, kubeconformValidator(t), deploy)
	p.report(t)
	for _, f := range []string{"k8s/nats.yaml", "k8s/poller.yaml", "k8s/submitter.yaml", "k8s/notifier.yaml", "k8s-keda/scaledobjects.yaml"} {
		require.Contains(t, valid, filepath.FromSlash(f), "not validated")
	}
	total := 0
	for f, n := range valid {
		if n == 0 {
			t.Errorf("%s: no resource validated", f)
		}
		total += n
	}
	t.Logf("kubeconform -strict: %d resources in %d files valid", total, len(valid))
}

// TestKubeconformRejects: kubeconform as configured above rejects broken
// variants of the real manifests, naming the offending field, and the
// whole-tree check of TestKubeconform fails on them.
func TestKubeconformRejects(t *testing.T) {
	root := repoRoot(t)
	v := kubeconformValidator(t)
	for _, tc := range []struct {
		name, file, old, new string
		want                 []string
	}{
		{"ScaledObject unknown field", "k8s-keda/scaledobjects.yaml", "  maxReplicaCount: 10\n", "  maxReplicaCont: 10\n",
			[]string{"ScaledObject submitter", "/spec", "additional properties 'maxReplicaCont' not allowed"}},
		{"ScaledObject nested unknown field", "k8s-keda/scaledobjects.yaml", "    horizontalPodAutoscalerConfig:", "    horizontalPodAutoscalerConfg:",
			[]string{"ScaledObject submitter", "/spec/advanced", "'horizontalPodAutoscalerConfg'"}},
		{"ScaledObject root unknown field", "k8s-keda/scaledobjects.yaml", "kind: ScaledObject\nmetadata:\n  name: notifier", "kind: ScaledObject\nmetdata:\n  name: notifier",
			[]string{"ScaledObject", "additional properties 'metdata' not allowed"}},
		{"ScaledObject wrong type", "k8s-keda/scaledobjects.yaml", "  minReplicaCount: 2\n", "  minReplicaCount: \"2\"\n",
			[]string{"/spec/minReplicaCount", "want integer"}},
		{"ScaledObject missing required", "k8s-keda/scaledobjects.yaml", "    - type: cpu\n", "    - typ: cpu\n",
			[]string{"ScaledObject poller", "/spec/triggers/1", "'typ'"}},
		{"Deployment unknown field", "k8s/poller.yaml", "terminationGracePeriodSeconds: 15", "terminationGracePeriodSecond: 15",
			[]string{"Deployment poller", "/spec/template/spec", "additional properties 'terminationGracePeriodSecond' not allowed"}},
		{"Deployment nested unknown field", "k8s/submitter.yaml", "readinessProbe:", "readynessProbe:",
			[]string{"Deployment submitter", "/spec/template/spec/containers/0", "'readynessProbe'"}},
		{"Deployment wrong type", "k8s/notifier.yaml", "containerPort: 9090", `containerPort: "9090"`,
			[]string{"Deployment notifier", "/spec/template/spec/containers/0/ports/0/containerPort", "want integer"}},
		{"HPA unknown field", "k8s/poller.yaml", "  maxReplicas: 10", "  maxReplica: 10",
			[]string{"HorizontalPodAutoscaler poller", "'maxReplica'"}},
		{"duplicate key", "k8s/redis.yaml", "  replicas: 1\n", "  replicas: 1\n  replicas: 2\n",
			[]string{"redis.yaml", "replicas"}},
		{"unknown kind", "k8s/config.yaml", "kind: ConfigMap", "kind: ConfigMapp",
			[]string{"config.yaml", "could not find schema for ConfigMapp"}},
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
			p, _ := kubeconformDir(t, v, tmp)
			requireProblem(t, p, tc.want...)
			t.Logf("rejected: %s", strings.Join(p, "; "))
		})
	}
}

// TestSchemasSelfContained: the schemas reference no other document (no
// $ref, $schema or $id), so validation never loads anything but the files,
// and every kind the manifests use has one.
func TestSchemasSelfContained(t *testing.T) {
	root := repoRoot(t)
	dir := filepath.Join(root, "deploy", "schemas")
	var files []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".json") {
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			for _, key := range []string{`"$ref"`, `"$schema"`, `"$id"`} {
				require.NotContains(t, string(b), key, path)
			}
			files = append(files, filepath.Base(path))
		}
		return err
	}))
	for _, want := range []string{"deployment-apps-v1.json", "service-v1.json", "horizontalpodautoscaler-autoscaling-v2.json", "scaledobject-keda-v1alpha1.json"} {
		require.True(t, slices.Contains(files, want), "deploy/schemas has no %s", want)
	}
}

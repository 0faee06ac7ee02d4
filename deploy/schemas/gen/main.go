// Command gen writes the JSON schemas kubeconform validates deploy/'s
// manifests against (deploy/schemas, see its README.md), offline from the
// Go module cache:
//
//   - core kinds from Kubernetes' own OpenAPI v2 document
//     (api/openapi-spec/swagger.json of the k8s.io/kubernetes module),
//     converted the way yannh/kubernetes-json-schema builds its
//     "-standalone-strict" flavour (openapi2jsonschema --kubernetes
//     --stand-alone --strict): every $ref inlined, additionalProperties:false
//     on every object with properties, int-or-string as oneOf
//     string/integer, Quantity as oneOf string/number, optional fields
//     nullable, apiVersion and kind restricted to the definition's own;
//   - custom resources from a CRD's openAPIV3Schema, as kubeconform's
//     scripts/openapi2jsonschema.py converts it with
//     DENY_ROOT_ADDITIONAL_PROPERTIES set: additionalProperties:false on every
//     object with properties (the root too), int-or-string as oneOf.
//
// Descriptions are left out (they are most of the bytes and no check reads
// them). Run from deploy/:
//
//	go run ./schemas/gen
//
// It downloads the pinned module versions with `go mod download` (the Go
// module proxy or the local module cache) and rewrites the files; the output
// is deterministic, so `git diff` shows any change.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// The core kinds the manifests use, as group/version/kind ("" group = core).
var coreKinds = []struct{ group, version, kind string }{
	{"", "v1", "Namespace"},
	{"", "v1", "ConfigMap"},
	{"", "v1", "Secret"},
	{"", "v1", "Service"},
	{"apps", "v1", "Deployment"},
	{"apps", "v1", "StatefulSet"},
	{"policy", "v1", "PodDisruptionBudget"},
	{"autoscaling", "v2", "HorizontalPodAutoscaler"},
}

// The CRDs, as paths inside the KEDA module.
var kedaCRDs = []string{"config/crd/bases/keda.sh_scaledobjects.yaml"}

func main() {
	k8sVersion := flag.String("kubernetes", "v1.37.2", "version of the k8s.io/kubernetes module (api/openapi-spec/swagger.json)")
	kedaVersion := flag.String("keda", "v2.21.0", "version of the github.com/kedacore/keda/v2 module (config/crd/bases)")
	out := flag.String("out", "schemas", "output directory (run from deploy/)")
	flag.Parse()

	k8sDir, err := download("k8s.io/kubernetes", *k8sVersion)
	if err != nil {
		log.Fatal(err)
	}
	swagger, err := os.ReadFile(filepath.Join(k8sDir, "api", "openapi-spec", "swagger.json"))
	if err != nil {
		log.Fatal(err)
	}
	coreDir := filepath.Join(*out, "kubernetes", *k8sVersion+"-standalone-strict")
	if err := os.RemoveAll(coreDir); err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(coreDir, 0o755); err != nil {
		log.Fatal(err)
	}
	defs, err := coreDefinitions(swagger)
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range coreKinds {
		s, err := coreSchema(defs, k.group, k.version, k.kind)
		if err != nil {
			log.Fatal(err)
		}
		if err := write(filepath.Join(coreDir, fileName(k.group, k.version, k.kind)), s); err != nil {
			log.Fatal(err)
		}
	}

	kedaDir, err := download("github.com/kedacore/keda/v2", *kedaVersion)
	if err != nil {
		log.Fatal(err)
	}
	crdDir := filepath.Join(*out, "crds")
	if err := os.MkdirAll(crdDir, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, p := range kedaCRDs {
		src, err := os.ReadFile(filepath.Join(kedaDir, p))
		if err != nil {
			log.Fatal(err)
		}
		schemas, err := crdSchemas(src)
		if err != nil {
			log.Fatalf("%s: %v", p, err)
		}
		for name, s := range schemas {
			if err := write(filepath.Join(crdDir, name), s); err != nil {
				log.Fatal(err)
			}
		}
	}
}

// download fetches module@version into the module cache and returns its directory.
func download(module, version string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = os.TempDir() // outside any module: go.mod and go.sum stay untouched
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(b, &info); jerr != nil && err == nil {
		err = jerr
	}
	if info.Error != "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", module, version, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", module, version, err)
	}
	return info.Dir, nil
}

// fileName is kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json.
func fileName(group, version, kind string) string {
	name := strings.ToLower(kind)
	if group != "" {
		name += "-" + strings.ToLower(strings.Split(group, ".")[0])
	}
	return name + "-" + strings.ToLower(version) + ".json"
}

func write(path string, s any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(s); err != nil {
		return err
	}
	fmt.Println("wrote", path)
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// coreDefinitions returns swagger.json's definitions with the two special
// types replaced as openapi2jsonschema --kubernetes does.
func coreDefinitions(swagger []byte) (map[string]any, error) {
	var doc struct {
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(swagger, &doc); err != nil {
		return nil, err
	}
	if len(doc.Definitions) == 0 {
		return nil, errors.New("swagger.json has no definitions")
	}
	doc.Definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = map[string]any{
		"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	doc.Definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = map[string]any{
		"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	return doc.Definitions, nil
}

// coreSchema builds the standalone strict schema of one kind.
func coreSchema(defs map[string]any, group, version, kind string) (map[string]any, error) {
	var name string
	for n, d := range defs {
		for _, gvk := range asList(asMap(d)["x-kubernetes-group-version-kind"]) {
			g := asMap(gvk)
			if g["group"] == group && g["version"] == version && g["kind"] == kind {
				if name != "" {
					return nil, fmt.Errorf("%s/%s %s: defined twice (%s, %s)", group, version, kind, name, n)
				}
				name = n
			}
		}
	}
	if name == "" {
		return nil, fmt.Errorf("%s/%s %s: no definition", group, version, kind)
	}
	expanded, err := expand(defs[name], defs, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s := asMap(stripDescriptions(expanded))
	if _, ok := s["type"]; !ok {
		s["type"] = "object"
	}
	s["additionalProperties"] = false
	props := asMap(s["properties"])
	apiVersion := version
	if group != "" {
		apiVersion = group + "/" + version
	}
	asMap(props["apiVersion"])["enum"] = []any{apiVersion}
	asMap(props["kind"])["enum"] = []any{kind}
	props = asMap(additionalProperties(props))
	props = asMap(replaceIntOrString(props))
	s["properties"] = allowNullOptionalFields(props, nil, nil, "")
	return s, nil
}

// expand inlines every "#/definitions/..." reference.
func expand(v any, defs map[string]any, stack []string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok {
			name, ok := strings.CutPrefix(ref, "#/definitions/")
			if !ok || defs[name] == nil {
				return nil, fmt.Errorf("unresolvable $ref %q", ref)
			}
			if slices.Contains(stack, name) {
				return nil, fmt.Errorf("recursive $ref %q: cannot be inlined", ref)
			}
			target, err := expand(defs[name], defs, append(stack, name))
			if err != nil {
				return nil, err
			}
			// Sibling keys of $ref (a description) override the target's.
			out := map[string]any{}
			for k, val := range asMap(target) {
				out[k] = val
			}
			for k, val := range x {
				if k != "$ref" {
					out[k] = val
				}
			}
			return out, nil
		}
		out := make(map[string]any, len(x))
		for k, val := range x {
			e, err := expand(val, defs, stack)
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			e, err := expand(val, defs, stack)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	}
	return v, nil
}

// crdSchemas converts every version's openAPIV3Schema of a CRD into
// <kind>-<group's first label>-<version>.json.
func crdSchemas(src []byte) (map[string]any, error) {
	var crd struct {
		Kind string `json:"kind"`
		Spec struct {
			Group string `json:"group"`
			Names struct {
				Kind string `json:"kind"`
			} `json:"names"`
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(src, &crd); err != nil {
		return nil, err
	}
	if crd.Kind != "CustomResourceDefinition" || len(crd.Spec.Versions) == 0 {
		return nil, errors.New("not a CustomResourceDefinition with versions")
	}
	out := map[string]any{}
	for _, v := range crd.Spec.Versions {
		if v.Schema.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("version %s has no openAPIV3Schema", v.Name)
		}
		s := asMap(stripDescriptions(v.Schema.OpenAPIV3Schema))
		s = asMap(additionalProperties(s)) // the root too (DENY_ROOT_ADDITIONAL_PROPERTIES)
		out[fileName(crd.Spec.Group, v.Name, crd.Spec.Names.Kind)] = replaceIntOrString(s)
	}
	return out, nil
}

// additionalProperties sets additionalProperties:false on every object
// schema with properties that does not say otherwise (kubectl's validation
// behaviour, openapi2jsonschema's additional_properties).
func additionalProperties(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x)+1)
		for k, val := range x {
			out[k] = additionalProperties(val)
		}
		if _, ok := x["properties"]; ok {
			if _, ok := x["additionalProperties"]; !ok {
				out["additionalProperties"] = false
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = additionalProperties(val)
		}
		return out
	}
	return v
}

// replaceIntOrString turns {"format": "int-or-string"} into oneOf string/integer.
func replaceIntOrString(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			if m, ok := val.(map[string]any); ok && m["format"] == "int-or-string" {
				out[k] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
				continue
			}
			out[k] = replaceIntOrString(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = replaceIntOrString(val)
		}
		return out
	}
	return v
}

// allowNullOptionalFields is openapi2jsonschema's allow_null_optional_fields
// (as kubernetes-json-schema's schemas are built with it): every "type"
// becomes [type, "null"] except a property's listed in its object's
// "required".
func allowNullOptionalFields(data, parent, grandParent any, key string) any {
	switch x := data.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, v := range x {
			switch val := v.(type) {
			case map[string]any:
				out[k] = allowNullOptionalFields(val, x, parent, k)
			case []any:
				l := make([]any, len(val))
				for i, item := range val {
					l[i] = allowNullOptionalFields(item, val, parent, k)
				}
				out[k] = l
			case string:
				if k == "type" && val != "null" && !isRequired(grandParent, key) {
					out[k] = []any{val, "null"}
				} else {
					out[k] = val
				}
			default:
				out[k] = v
			}
		}
		return out
	}
	return data
}

// isRequired is Python's `grand_parent and "required" in grand_parent and
// key in grand_parent["required"]`.
func isRequired(grandParent any, key string) bool {
	m, ok := grandParent.(map[string]any)
	return ok && slices.Contains(asList(m["required"]), any(key))
}

// stripDescriptions drops every string-valued "description" key (a schema's
// description; a property named description is a map and stays).
func stripDescriptions(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			if _, ok := val.(string); ok && k == "description" {
				continue
			}
			out[k] = stripDescriptions(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = stripDescriptions(val)
		}
		return out
	}
	return v
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }
func asList(v any) []any         { l, _ := v.([]any); return l }

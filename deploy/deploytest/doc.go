// Package deploytest validates the deployment files offline (run with
// `cd deploy && go test ./...`, as scripts/test.sh does): the Dockerfile and
// .dockerignore, docker-compose.yml (loaded with compose-go, the library
// docker compose itself uses) and the Kubernetes manifests in deploy/k8s
// (strictly decoded into the typed Kubernetes API structs, so a misspelt
// field fails), and every manifest under deploy/ with kubeconform -strict
// against the JSON schemas kept in deploy/schemas (never downloaded),
// including the KEDA overlay deploy/k8s-keda, whose ScaledObjects are also
// checked against the workers' streams, consumers and metrics.
//
// Beyond syntax it checks that the files agree with each other and with the
// workers: every worker's environment passes the workers' own
// configuration validation (pkg/config), probes point at METRICS_ADDR,
// selectors match, referenced ConfigMaps, Secrets and keys exist, the NATS
// configuration parses with nats-server's own parser and forms a cluster of
// the declared replicas, and every binary a service runs is built by the
// Dockerfile.
//
// It is in a module of its own (deploy/go.mod, which replaces the product's
// module with this checkout), so the Kubernetes and compose-go libraries it
// needs are not dependencies of the product. It has no non-test code; this
// file only carries the package doc.
package deploytest

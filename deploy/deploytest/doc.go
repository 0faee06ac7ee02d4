// Package deploytest validates the deployment files offline, as part of
// `go test ./...`: the Dockerfile and .dockerignore, docker-compose.yml
// (loaded with compose-go, the library docker compose itself uses) and the
// Kubernetes manifests in deploy/k8s (strictly decoded into the typed
// Kubernetes API structs, so a misspelt field fails).
//
// Beyond syntax it checks that the files agree with each other and with the
// workers: every worker's environment passes the workers' own
// configuration validation (pkg/config), probes point at METRICS_ADDR,
// selectors match, referenced ConfigMaps, Secrets and keys exist, the NATS
// configuration parses with nats-server's own parser and forms a cluster of
// the declared replicas, and every binary a service runs is built by the
// Dockerfile.
//
// It has no non-test code; this file only carries the package doc.
package deploytest

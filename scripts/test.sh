#!/usr/bin/env bash
# The README's test command: format, vet, tidy modules, staticcheck and the
# whole test suite with the race detector (the product's module, then the
# deployment tests' module in deploy/). Installs redis-server (the tests
# start their own on free ports) when it is missing. Long chaos and load
# runs are behind -tags chaos and the bench command; see the README.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run besides Go: redis-server (each test starts its own on
# a free port), tmux (the `jobs watch` terminal test) and Chromium (the
# dashboard's browser test). Installed with apt-get when missing.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
  echo "test: gofmt would change:"; echo "$unformatted"; exit 1
fi
go build ./...
go vet ./...
(cd deploy && go vet ./...)

# go.mod and go.sum of both modules (the product and the deployment tests in
# deploy/, a module of their own so Kubernetes and compose-go stay out of the
# product's dependencies) are exactly what `go mod tidy` makes.
for mod in . deploy; do
  if ! (cd "$mod" && go mod tidy -diff); then
    echo "test: go mod tidy would change $mod/go.mod or go.sum (diff above); run it there"; exit 1
  fi
done
echo "test: go mod tidy -diff: clean in . and deploy"

# staticcheck, pinned, fetched through the Go module proxy (about a minute on
# 2 cores with a cold analysis cache, seconds when warm).
staticcheck="honnef.co/go/tools/cmd/staticcheck@v0.8.2"
go run "$staticcheck" ./...
(cd deploy && go run "$staticcheck" ./...)
echo "test: staticcheck ($staticcheck): clean in . and deploy"

go test -race -count=1 -timeout 20m ./...
# The deployment tests (deploy/deploytest; offline, seconds) are a module of
# their own, so `go test ./...` above does not reach them.
(cd deploy && go test -race -count=1 -timeout 5m ./...)
# What kubeconform -strict said of the manifests (in-repo schemas only).
(cd deploy && go test -count=1 -run '^TestKubeconform$' -v ./deploytest) | grep -E 'kubeconform|^(--- |ok|FAIL)'


#!/usr/bin/env bash
# The README's test command: format, vet and the whole test suite with the
# race detector. Installs redis-server (the tests start their own on free
# ports) when it is missing. Long chaos and load runs are behind -tags
# chaos and the bench command; see the README.
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
go test -race -count=1 -timeout 20m ./...

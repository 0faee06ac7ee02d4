# syntax=docker/dockerfile:1
#
# One image holds every binary of the fleet; each service picks its binary
# with its entrypoint (compose) or command (Kubernetes):
#
#   /usr/local/bin/submitter        /usr/local/bin/poller
#   /usr/local/bin/notifier         /usr/local/bin/openai-emulator
#   /usr/local/bin/batchfleet       (operator tool; the default entrypoint)
#
#   docker build -t ghcr.io/batchfleet/batchfleet:dev .
#   docker run --rm --entrypoint /usr/local/bin/poller ghcr.io/batchfleet/batchfleet:dev
#
# Configuration is only through environment variables (see README.md, Configuration).

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Dependencies first, so source edits do not re-download modules.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS TARGETARCH
# Static, reproducible binaries (no cgo, no local paths, no VCS stamping),
# cross-compiled for the target platform without emulation.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="batchfleet" \
      org.opencontainers.image.description="Worker fleet running OpenAI Batch API jobs" \
      org.opencontainers.image.source="https://github.com/batchfleet/batchfleet" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ /usr/local/bin/
# distroless "nonroot": uid/gid 65532, no shell, no package manager.
USER 65532:65532
# METRICS_ADDR (/metrics, /healthz) and VENDOR_WEBHOOK_ADDR (pollers) as used
# by docker-compose.yml and deploy/k8s; the emulator listens on 8080.
EXPOSE 9090 8090 8080
ENTRYPOINT ["/usr/local/bin/batchfleet"]

.PHONY: run test bench screenshots help

run: ## Run the whole fleet on embedded defaults (NATS, Redis, vendor emulator)
	go run ./cmd/batchfleet dev

test: ## Format check, vet, and all tests with -race (installs redis-server if missing)
	./scripts/test.sh

bench: ## Benchmarks that print throughput, latency and memory figures (bench/, bench/poll/, bench/large/), one package at a time
	go test -p 1 -run '^$$' -bench . -benchtime 1x -v -timeout 90m ./bench/...

screenshots: ## Retake the dashboard's screenshots in docs/screenshots (headless Chromium)
	BATCHFLEET_SCREENSHOTS=$(CURDIR)/docs/screenshots go test -count=1 -run 'TestDashboard/browser' -v ./pkg/dashboard

help: ## List targets
	@awk -F':.*## ' '/^[a-z]+:.*## /{printf "%-8s %s\n",$$1,$$2}' $(MAKEFILE_LIST)

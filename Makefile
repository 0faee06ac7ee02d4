.PHONY: run test bench help

run: ## Run the whole fleet on embedded defaults (NATS, Redis, vendor emulator)
	go run ./cmd/batchfleet dev

test: ## Format check, vet, and all tests with -race (installs redis-server if missing)
	./scripts/test.sh

bench: ## Benchmarks that print throughput, latency and memory figures (bench/, bench/poll/, bench/large/), one package at a time
	go test -p 1 -run '^$$' -bench . -benchtime 1x -v -timeout 90m ./bench/...

help: ## List targets
	@awk -F':.*## ' '/^[a-z]+:.*## /{printf "%-8s %s\n",$$1,$$2}' $(MAKEFILE_LIST)

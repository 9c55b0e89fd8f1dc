# The targets a newcomer guesses. `make demo` needs only Go: its broker and
# NATS are embedded, and it uses a ClickHouse installed on the machine when
# there is one (else storage is off, and it says so). `make test` installs
# what the tests need first (scripts/deps.sh).

GO ?= go
PKGS ?= ./...
COMPOSE_PKG = github.com/telemetry-demo/telemetry/e2e/compose

.PHONY: demo test deps-test web-deps bench lint build fuzz compose-images compose-up compose-down

# The demo runs as a built binary, not under `go run`: `go run` exits 1
# whenever it is interrupted, so Ctrl-C ended every demo with "make: ***
# [demo] Error 1" although the demo itself stopped cleanly and exited 0.
demo: build
	./bin/telemetry demo

# The third line runs, without the race detector, the one test in which
# mochi races with itself (internal/broker/close_norace_test.go,
# mochi-mqtt/server#541). The compose test (e2e/compose: the stack in
# Docker under a load test) runs last and alone: beside the other packages
# on two cores it starves their timed outages. Without a Docker engine it
# skips (CI installs one: .ci/run).
test: deps-test
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 25m $(filter-out $(COMPOSE_PKG),$(shell $(GO) list $(PKGS)))
	$(GO) test -count=1 -run TestCloseWhileClientsJoin ./internal/broker/
	$(GO) test -count=1 -timeout 15m $(COMPOSE_PKG)

deps-test:
	./scripts/deps.sh
	./scripts/web-deps.sh

# The phones' page (telemetry demo --mqtt-ws) embeds mqtt.js from npm,
# fetched at a pinned version and integrity (scripts/web-deps.sh): run it
# once before `make build` to let phones join. `make demo` needs only Go,
# so it does not; without it the /join page says the client is missing.
web-deps:
	./scripts/web-deps.sh

build:
	$(GO) build -o bin/telemetry ./cmd/telemetry

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS)

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 60s ./internal/protocol/

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet $(PKGS)

# The presenters' stack (compose.yaml) for real, on a Docker engine that may
# reach no registry: compose-images builds every image compose.yaml names
# here (scripts/compose-images.sh); compose-up installs the compose CLI when
# missing, builds the images when missing and no registry answers, then
# runs `docker compose up -d --wait` (docs/PRESENTER.md).
compose-images:
	./scripts/compose-images.sh

compose-up:
	./scripts/compose-up.sh

compose-down:
	docker compose down -v

# ringbus: every target works on a fresh machine with Go installed; tools run
# through `go run` at pinned versions, modules come from the module proxy.

GO         ?= go
BENCH      ?= .
COUNT      ?= 10
BENCHTIME  ?= 1s
PKG        ?= ./...
FUZZTIME   ?= 30s
BENCHSTAT  ?= $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Every module in the repo: the root and each nested go.mod.
MODULES := $(patsubst %/go.mod,%,$(shell find . -name go.mod -not -path './.git/*' | sort))

.PHONY: all demo test fmt-check cross bench bench-compare fuzz cover lint tidy-check stress

all: test

demo:
	$(GO) run ./examples/pipeline

## test: gofmt check, tidy-check, lint and cross; then go vet, go build (every example) and
## go test -race in every module; and the root module's -short tests once more without -race,
## because internal/atomicx's assembly is built only without the race detector.
test: fmt-check tidy-check lint cross
	@set -e; for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) vet ./... && $(GO) build -o /dev/null ./... && $(GO) test -race -count=1 ./...); \
	done
	$(GO) test -count=1 -short ./...

## cross: the root module vetted and built for GOARCH=386 (32-bit) and arm64, and its -short
## tests run as 386 binaries (no -race there; an amd64 or 386 host runs them natively, any
## other host skips them and says so); every nested module built for both. PKG narrows the
## root module's packages.
CROSS_ARCHES := 386 arm64
cross:
	@set -e; for a in $(CROSS_ARCHES); do \
		echo "== . GOARCH=$$a"; \
		GOARCH=$$a $(GO) vet $(PKG); \
		GOARCH=$$a $(GO) build -o /dev/null $(PKG); \
	done
	@case "$$($(GO) env GOHOSTARCH)" in \
	amd64|386) GOARCH=386 $(GO) test -short -count=1 $(PKG) ;; \
	*) echo "cross: skipping the GOARCH=386 tests: a $$($(GO) env GOHOSTARCH) host cannot run them" ;; \
	esac
	@set -e; for m in $(filter-out .,$(MODULES)); do for a in $(CROSS_ARCHES); do \
		echo "== $$m GOARCH=$$a"; \
		(cd $$m && GOARCH=$$a $(GO) build -o /dev/null ./...); \
	done; done

fmt-check:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## stress: the long runs behind the stress build tag.
stress:
	@set -e; for m in $(MODULES); do \
		(cd $$m && $(GO) test -race -tags stress -count=1 -timeout 30m ./...); \
	done

## bench: BENCH regexp over PKG in the root module, COUNT runs, through benchstat.
bench:
	@mkdir -p .bench
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(BENCHTIME) -count $(COUNT) $(PKG) | tee .bench/new.txt
	$(BENCHSTAT) .bench/new.txt

## bench-compare: the benchmarks/ module (ringbus against channels, queues and
## pub/sub libraries) at GOMAXPROCS=2, COUNT runs of CMP_BENCHTIME each,
## through benchstat into benchmarks/RESULTS.md; the raw output stays in
## benchmarks/results.txt and cmd/chart draws it into docs/benchmarks.svg.
## About 10 minutes on 2 cores with the defaults (COUNT=10, 750ms).
CMP_BENCHTIME ?= 750ms
CMP_TEST = test -run '^$$' -bench '$(BENCH)' -benchmem -benchtime $(CMP_BENCHTIME) -count $(COUNT) -cpu 2 -timeout 60m .
CMP_STAT = -table .name -col /impl results.txt
bench-compare:
	@mkdir -p benchmarks/.bench docs
	@cut -d' ' -f1-3 /proc/loadavg > benchmarks/.bench/load-before
	@cd benchmarks; src="$$(find ../dispatcher ../internal -name '*.go' ! -name '*_test.go' | sort)"; \
	rev="$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"; \
	dirty="$$(git status --porcelain -- $$src 2>/dev/null | awk '{print $$2}' | sed 's|^\.\./||' | tr '\n' ' ')"; \
	echo "$$rev$${dirty:+, with uncommitted changes to $$dirty}(sources hashed: $$(cat $$src | sha256sum | cut -c1-12))" > .bench/core
	cd benchmarks && $(GO) $(CMP_TEST) | tee results.txt
	@cut -d' ' -f1-3 /proc/loadavg > benchmarks/.bench/load-after
	@grep -q '^ok' benchmarks/results.txt || { echo "bench-compare: the benchmarks failed"; exit 1; }
	cd benchmarks && $(BENCHSTAT) $(CMP_STAT) > .bench/benchstat.txt
	@set -e; cd benchmarks; \
	cpu="$$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"; \
	cores="$$(nproc)"; gover="$$($(GO) env GOVERSION)"; day="$$(date -u +%Y-%m-%d)"; \
	$(GO) run ./cmd/chart -in results.txt -out ../docs/benchmarks.svg -ratios .bench/ratios.md \
		-caption "$$cpu, $$cores cores, GOMAXPROCS=2, $$gover, $$day. Medians of $(COUNT) runs; make bench-compare"; \
	{ \
	echo "# ringbus benchmark results"; echo; \
	echo "Written by \`make bench-compare\`; do not edit by hand. What each benchmark measures"; \
	echo "and the analysis of the targets are in [README.md](README.md); the chart is"; \
	echo "[docs/benchmarks.svg](../docs/benchmarks.svg), the raw output [results.txt](results.txt)."; echo; \
	echo "- Date: $$day"; \
	echo "- Machine: $$cpu ($$cores cores), GOMAXPROCS=2, $$($(GO) env GOOS)/$$($(GO) env GOARCH)"; \
	echo "- Go: $$gover"; \
	echo "- Load average (1, 5, 15 min) before the run: $$(cat .bench/load-before); after: $$(cat .bench/load-after)"; \
	echo "- ringbus core (dispatcher/, internal/): $$(cat .bench/core)"; \
	echo "- Command, in benchmarks/: \`go $(CMP_TEST) | tee results.txt\`"; \
	echo "- Then: \`benchstat $(CMP_STAT)\` (golang.org/x/perf/cmd/benchstat, pinned in the Makefile)"; echo; \
	echo "## Ratios to ringbus"; echo; cat .bench/ratios.md; echo; \
	echo "## benchstat"; echo; \
	echo "Columns are implementations; \"vs base\" compares each with ringbus (the first column):"; \
	echo "+100% means twice ringbus's time per op."; echo; \
	echo '```text'; cat .bench/benchstat.txt; echo '```'; \
	} > RESULTS.md
	@echo "wrote benchmarks/RESULTS.md, benchmarks/results.txt and docs/benchmarks.svg"

## fuzz: each fuzz target for FUZZTIME.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRing$$' -fuzztime $(FUZZTIME) ./internal/ring
	$(GO) test -run '^$$' -fuzz '^FuzzMatch$$' -fuzztime $(FUZZTIME) ./internal/topic
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./internal/topic

cover:
	@mkdir -p .cover
	$(GO) test -coverprofile .cover/cover.out ./...
	$(GO) tool cover -func .cover/cover.out | tail -1

## lint: staticcheck (pinned above) in every module.
lint:
	@set -e; for m in $(MODULES); do echo "== $$m"; (cd $$m && $(STATICCHECK) ./...); done

## tidy-check: fails when go mod tidy would change any module's go.mod or go.sum.
tidy-check:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) mod tidy -diff); done

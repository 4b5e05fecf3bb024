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

.PHONY: all demo test fmt-check vet race build bench bench-compare fuzz cover lint tidy-check stress

all: test

demo:
	$(GO) run ./examples/pipeline

## test: gofmt check, then go vet, go build (every example) and go test -race in every module.
test: fmt-check
	@set -e; for m in $(MODULES); do \
		echo "== $$m"; \
		(cd $$m && $(GO) vet ./... && $(GO) build ./... && $(GO) test -race -count=1 ./...); \
	done

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

## fuzz: each fuzz target for FUZZTIME.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRing$$' -fuzztime $(FUZZTIME) ./internal/ring
	$(GO) test -run '^$$' -fuzz '^FuzzMatch$$' -fuzztime $(FUZZTIME) ./dispatcher

cover:
	@mkdir -p .cover
	$(GO) test -coverprofile .cover/cover.out ./...
	$(GO) tool cover -func .cover/cover.out | tail -1

lint:
	@set -e; for m in $(MODULES); do (cd $$m && $(STATICCHECK) ./...); done

## tidy-check: fails when go mod tidy would change any module's go.mod or go.sum.
tidy-check:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) mod tidy -diff); done

# greyharness — make demo runs the default pack against the built-in sample
# relay; make test runs every test (unit, sample-relay bug matrix, real
# Postfix, Exim, Haraka and OpenSMTPD end to end); make conformance runs the
# pack against every relay in ci/ but the timing variant postfix-realtimers
# (sendmail, nullmailer and maddy too) and writes docs/conformance.md.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO      ?= go
BIN     := bin/greyharness
RESULTS ?= results

.PHONY: all build demo deps test unit race short e2e-sample e2e-cli lint vet e2e e2e-postfix e2e-exim e2e-opensmtpd e2e-haraka e2e-postfix-realtimers e2e-sendmail e2e-nullmailer e2e-maddy conformance conformance-doc bench bench-fakemta bench-pack fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/greyharness

## demo: the default scenario pack against the built-in sample relay.
demo: build
	$(BIN) run --relay sample

## test: vet + gofmt, the unit tests under the race detector, every test, sample-relay matrix, Postfix, Exim, Haraka and OpenSMTPD end to end.
test: deps lint build race unit e2e

## deps: install what make test needs on a fresh Debian machine (root; nothing when present).
deps:
	bash ci/deps.sh

unit:
	$(GO) test -count=1 -timeout 15m ./...

## race: every unit test (-short) under the race detector (about a minute).
race:
	$(GO) test -race -short -count=1 ./...

## short: the inner loop (<= 20 s): every unit test; end-to-end runs and real-timer waits skip.
short:
	$(GO) test -short ./...

## e2e-sample: the end-to-end runs against the built-in sample relay on their own: the default
## pack (Ginkgo suite), the bug matrix and the remote fake MTA (harness), and the sample relay's
## retry/expiry/restart tests (samplerelay). make unit runs them too.
e2e-sample:
	$(GO) test -count=1 -timeout 15m ./harness ./samplerelay

## e2e-cli: the CLI end to end (builds the binary, runs the pack, judge, validate, exit codes).
e2e-cli:
	$(GO) test -count=1 -timeout 15m ./cmd/greyharness

## lint: go.mod tidy, gofmt, go vet (also for windows: non-unix builds), staticcheck.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: vet
	$(GO) mod tidy -diff
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	GOOS=windows $(GO) build ./...
	GOOS=windows $(GO) vet ./harness/relay
	$(STATICCHECK) ./...

vet:
	$(GO) vet ./...

# One real relay after the other: side by side they starve each other's
# queue runners on a 2-core machine, and their retry timing is what is judged.
# OpenSMTPD's retries are forced by its profile (ci/opensmtpd: its own backoff
# is a compiled-in 400 s x n^2).
e2e: e2e-postfix e2e-exim e2e-haraka e2e-opensmtpd

e2e-postfix: build
	@mkdir -p $(RESULTS)
	$(BIN) run --relay ci/postfix/relay.yaml --junit $(RESULTS)/postfix-junit.xml --json $(RESULTS)/postfix.json --html $(RESULTS)/postfix.html --results $(RESULTS)/postfix

e2e-exim: build
	@mkdir -p $(RESULTS)
	$(BIN) run --relay ci/exim/relay.yaml --junit $(RESULTS)/exim-junit.xml --json $(RESULTS)/exim.json --html $(RESULTS)/exim.html --results $(RESULTS)/exim

# OpenSMTPD (ci/opensmtpd: retries forced by its profile's forcer) and Haraka
# (ci/haraka: node >= 20, installed privately from npm when older) on their
# own default ports (SUBMIT_PORT / NEXT_HOP_PORT from the environment win).
e2e-opensmtpd: build
	@mkdir -p $(RESULTS)
	SUBMIT_PORT=$${SUBMIT_PORT:-2545} NEXT_HOP_PORT=$${NEXT_HOP_PORT:-2546} $(BIN) run --relay ci/opensmtpd/relay.yaml --junit $(RESULTS)/opensmtpd-junit.xml --json $(RESULTS)/opensmtpd.json --html $(RESULTS)/opensmtpd.html --results $(RESULTS)/opensmtpd

e2e-haraka: build
	@mkdir -p $(RESULTS)
	SUBMIT_PORT=$${SUBMIT_PORT:-2555} NEXT_HOP_PORT=$${NEXT_HOP_PORT:-2556} $(BIN) run --relay ci/haraka/relay.yaml --junit $(RESULTS)/haraka-junit.xml --json $(RESULTS)/haraka.json --html $(RESULTS)/haraka.html --results $(RESULTS)/haraka

## conformance: the pack against every relay in CONFORMANCE_RELAYS, one after
## the other (a relay's ci/NAME/conformance.args, e.g. --focus ..., runs a
## reduced set, labelled in the matrix; # lines there are comments), then
## docs/conformance.md from their JSON (conformance-doc). A failing relay does
## not stop the others; the matrix shows it. Each relay's results stay in
## $(CONFORMANCE)/NAME.json (.wall, .args, -junit.xml, .html, NAME/), so
## make conformance RELAYS="opensmtpd" re-runs only OpenSMTPD and rewrites the
## matrix from its new JSON and every other relay's saved one;
## make conformance-doc only rewrites it. A relay without saved JSON stops
## conformance-doc (every relay keeps its row): run it, or point CONFORMANCE
## at a folder that has it (make conformance-doc CONFORMANCE=/elsewhere).
##
## Not in the matrix (CONFORMANCE_EXCLUDE):
## - postfix-realtimers: the same Postfix and the same private instance as
##   ci/postfix, with Debian's default timers (a first retry 5-10 min after a
##   451): a timing variant of the postfix row, not another relay, kept for
##   make e2e-postfix-realtimers. Its pack takes about 10 minutes and each
##   verdict would repeat postfix's at slower timers.
## - the built-in sample relay (--relay sample) is not in ci/: it is the
##   harness's own reference relay, and make unit runs the pack against it.
CONFORMANCE ?= $(RESULTS)/conformance
CONFORMANCE_EXCLUDE := postfix-realtimers
CONFORMANCE_RELAYS := $(filter-out $(CONFORMANCE_EXCLUDE),$(patsubst ci/%/relay.yaml,%,$(wildcard ci/*/relay.yaml)))
RELAYS ?= $(CONFORMANCE_RELAYS)
conformance: build
	@mkdir -p $(CONFORMANCE)
	@set -u; for relay in $(RELAYS); do \
		prof=ci/$$relay/relay.yaml; \
		[ -f $$prof ] || { echo "== conformance: no $$prof (RELAYS: names of ci/*/ folders)" >&2; exit 2; }; \
		rm -rf $(CONFORMANCE)/$$relay.json $(CONFORMANCE)/$$relay.args $(CONFORMANCE)/$$relay.wall $(CONFORMANCE)/$$relay-junit.xml $(CONFORMANCE)/$$relay.html $(CONFORMANCE)/$$relay; \
		args=""; \
		if [ -f ci/$$relay/conformance.args ]; then args=$$(grep -v '^[[:space:]]*\(#\|$$\)' ci/$$relay/conformance.args | tr '\n' ' ' | sed 's/ *$$//'); echo "$$args" >$(CONFORMANCE)/$$relay.args; fi; \
		echo "== conformance: $$relay $$args ($$(date -u +%H:%M:%S) UTC)"; start=$$(date +%s); \
		eval "$(BIN) run --relay $$prof --json $(CONFORMANCE)/$$relay.json --junit $(CONFORMANCE)/$$relay-junit.xml --html $(CONFORMANCE)/$$relay.html --results $(CONFORMANCE)/$$relay $$args" \
			|| echo "== conformance: $$relay failed (exit $$?): see docs/conformance.md"; \
		echo $$(( $$(date +%s) - start )) >$(CONFORMANCE)/$$relay.wall; \
		[ -s $(CONFORMANCE)/$$relay.json ] || echo '[]' >$(CONFORMANCE)/$$relay.json; \
	done
	@$(MAKE) --no-print-directory conformance-doc

## conformance-doc: docs/conformance.md from every relay's saved JSON in $(CONFORMANCE).
conformance-doc: build
	@set -u; files=""; missing=""; \
	for relay in $(CONFORMANCE_RELAYS); do \
		if [ -s $(CONFORMANCE)/$$relay.json ]; then files="$$files $(CONFORMANCE)/$$relay.json"; else missing="$$missing $$relay"; fi; \
	done; \
	if [ -n "$$missing" ]; then echo "conformance-doc: no saved results in $(CONFORMANCE) for:$$missing (make conformance RELAYS=\"$${missing# }\" runs them); docs/conformance.md not written" >&2; exit 1; fi; \
	$(BIN) conformance --out docs/conformance.md $$files && echo "docs/conformance.md written from$$files"

# Postfix with Debian's default timers (ci/postfix-realtimers): a first retry
# 5-10 minutes after a 451, so not in make test. REALTIMERS_FLAGS adds run
# flags, e.g. make e2e-postfix-realtimers REALTIMERS_FLAGS='--focus ^greylist-once$$'
REALTIMERS_FLAGS ?=
e2e-postfix-realtimers: build
	@mkdir -p $(RESULTS)
	$(BIN) run --relay ci/postfix-realtimers/relay.yaml --junit $(RESULTS)/postfix-realtimers-junit.xml --json $(RESULTS)/postfix-realtimers.json --html $(RESULTS)/postfix-realtimers.html --results $(RESULTS)/postfix-realtimers $(REALTIMERS_FLAGS)

# sendmail (ci/sendmail, Debian's, extracted), nullmailer (ci/nullmailer,
# Debian's, extracted) and maddy (ci/maddy, built from the Go module proxy;
# its 15-minute backoff makes a run take about an hour) on their own ports;
# not in e2e (see docs/relays.md).
e2e-sendmail: build
	@mkdir -p $(RESULTS)
	SUBMIT_PORT=2575 NEXT_HOP_PORT=2576 $(BIN) run --relay ci/sendmail/relay.yaml --junit $(RESULTS)/sendmail-junit.xml --json $(RESULTS)/sendmail.json --html $(RESULTS)/sendmail.html --results $(RESULTS)/sendmail

e2e-nullmailer: build
	@mkdir -p $(RESULTS)
	SUBMIT_PORT=2595 NEXT_HOP_PORT=2596 $(BIN) run --relay ci/nullmailer/relay.yaml --junit $(RESULTS)/nullmailer-junit.xml --json $(RESULTS)/nullmailer.json --html $(RESULTS)/nullmailer.html --results $(RESULTS)/nullmailer

e2e-maddy: build
	@mkdir -p $(RESULTS)
	bash ci/maddy/maddy.sh install   # the first build takes long: show it here, not in relay.log
	SUBMIT_PORT=2565 NEXT_HOP_PORT=2566 $(BIN) run --relay ci/maddy/relay.yaml --junit $(RESULTS)/maddy-junit.xml --json $(RESULTS)/maddy.json --html $(RESULTS)/maddy.html --results $(RESULTS)/maddy

bench: bench-fakemta
	$(GO) test -run '^$$' -bench . -benchmem ./fakemta/...

## bench-pack: the default pack against the sample relay, Postfix and Exim at
## full concurrency: wall time, the longest scenario's own time, their ratio.
bench-pack: build
	BIN=$(BIN) ci/bench-pack.sh

## bench-fakemta: the fake MTA against smtp-sink (BENCH_FLAGS="-pin -rounds 5" and so on).
BENCH_FLAGS ?=
bench-fakemta:
	$(GO) run ./fakemta/bench $(BENCH_FLAGS)

## fuzz: short runs of every fuzz target (FUZZTIME=60s for the long ones).
FUZZTIME ?= 10s
fuzz:
	@set -e; for t in fakemta:FuzzParsePolicy fakemta:FuzzWireTap fakemta:FuzzWireTapShortReads fakemta:FuzzAPIRequest \
		fakemta:FuzzEventEncoder fakemta:FuzzParseWireReply fakemta/dsn:FuzzParse \
		fakemta/dsn:FuzzBuildRoundTrip scenarios:FuzzLoadBytes harness/ledger:FuzzJudgeConservation; do \
		echo "fuzz $${t#*:} ($${t%%:*}, $(FUZZTIME))"; \
		$(GO) test ./$${t%%:*} -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME); \
	done

clean:
	rm -rf bin $(RESULTS)

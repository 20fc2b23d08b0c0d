#!/usr/bin/env bash
# bench-pack.sh: the default pack against the sample relay, Postfix and Exim,
# with full concurrency; prints, for each, the wall time of the run, the
# longest scenario's own time (first submission to last delivery or DSN,
# span_seconds in --json) and their ratio. A benchmark, not a test: it
# exits 0 whatever the verdicts (they are printed).
#
#   BIN=bin/greyharness RELAYS="sample ci/postfix/relay.yaml ci/exim/relay.yaml" ci/bench-pack.sh
#
# Postfix and Exim use SUBMIT_PORT / NEXT_HOP_PORT / GREYHARNESS_WORK from
# the environment (their scripts' defaults otherwise); PARALLEL is passed
# to --parallel (default 0: as many as isolation allows).
set -u
BIN=${BIN:-bin/greyharness}
RELAYS=${RELAYS:-sample ci/postfix/relay.yaml ci/exim/relay.yaml}
PARALLEL=${PARALLEL:-0}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/greyharness-bench-pack.XXXXXX)}
mkdir -p "$OUT"
rows=()
for relay in $RELAYS; do
	name=$(basename "$(dirname "$relay")")
	[ "$relay" = sample ] && name=sample
	json="$OUT/$name.json"
	log="$OUT/$name.log"
	start=$(date +%s.%N)
	"$BIN" run --relay "$relay" --parallel "$PARALLEL" --json "$json" --results "$OUT/$name-results" >"$log" 2>&1
	code=$?
	end=$(date +%s.%N)
	wall=$(echo "$end - $start" | bc)
	longest=$(jq -r '[.[] | .span_seconds // 0] | max' "$json" 2>/dev/null || echo 0)
	which=$(jq -r 'max_by(.span_seconds // 0) | .scenario' "$json" 2>/dev/null || echo "?")
	passed=$(jq -r '[.[] | select(.status == "passed")] | length' "$json" 2>/dev/null || echo "?")
	total=$(jq -r 'length' "$json" 2>/dev/null || echo "?")
	ratio=$(echo "scale=2; $wall / $longest" | bc 2>/dev/null || echo "?")
	rows+=("$(printf '%-8s %8.1fs %10.1fs  %-36s %6s  %s/%s passed (exit %d)' "$name" "$wall" "$longest" "$which" "$ratio" "$passed" "$total" "$code")")
	echo "bench-pack: $name done in ${wall}s (log $log)" >&2
done
printf '%-8s %9s %11s  %-36s %6s  %s\n' relay wall longest "longest scenario" ratio verdicts
for r in "${rows[@]}"; do echo "$r"; done

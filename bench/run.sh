#!/usr/bin/env bash
# Membrane's benchmarks side by side with the systems people would use instead.
#
#   bench/run.sh [--quick] [--reps N] [--append] [SCENARIO...]
#                (scenarios: S1 S3 S4 S5 S7 S8 S9 S10; --append adds to the last run's results)
#
# Installs what it needs (npm packages into bench/js, Syncthing with apt), builds the
# harness (release; debug with --quick), runs every scenario N times (default 5; 1 with
# --quick) with Membrane and its peers alternating, and writes bench/results.jsonl (every
# run), bench/results.json and bench/results.md (median, min, max, ratio to the peer, and
# the goals). --quick uses small sizes: it keeps the harness from rotting, its figures mean
# little.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=""
REPS=""
APPEND=""
SCENARIOS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK="--quick" ;;
    --reps) REPS="$2"; shift ;;
    --append) APPEND=1 ;;
    S1|S3|S4|S5|S7|S8|S9|S10) SCENARIOS+=("$1") ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see bench/run.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(S1 S3 S4 S5 S7 S8 S9 S10)
[ -z "$REPS" ] && { [ -n "$QUICK" ] && REPS=1 || REPS=5; }

TRACE="$ROOT/../shared/data/editing-traces/automerge-paper.json.gz"
[ -f "$TRACE" ] || { echo "error: $TRACE is missing (../shared/data beside the project)" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

# --- what the peers need -------------------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "installing Node.js with apt"
  apt-get update -qq >&2 && apt-get install -y -qq nodejs npm >&2
fi
if [ ! -d bench/js/node_modules ]; then
  log "installing the npm packages into bench/js"
  # `npm install`, not `npm ci`: the versions are pinned exactly in package.json, and npm ci
  # refuses a lockfile written where optional platform packages were left out.
  (cd bench/js && npm install --no-audit --no-fund --loglevel=error >&2)
fi
# automerge-wasm slows down sharply once one Node process holds thousands of documents (V8
# counts its memory as external and garbage-collects harder at every growth); growing its
# memory up front avoids that. The peers are measured in that, their faster, configuration.
export BENCH_WASM_PREGROW_MB="${BENCH_WASM_PREGROW_MB:-1024}"
[ -n "$QUICK" ] && BENCH_WASM_PREGROW_MB=0

# --- Membrane's side ----------------------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE=release; CARGO_PROFILE=(--release)
[ -n "$QUICK" ] && { PROFILE=debug; CARGO_PROFILE=(); }
log "building the harness and the membrane binary ($PROFILE)"
cargo build -q "${CARGO_PROFILE[@]}" --manifest-path bench/harness/Cargo.toml >&2
cargo build -q "${CARGO_PROFILE[@]}" -p membrane-cli >&2
BENCH="$CARGO_TARGET_DIR/$PROFILE/membrane-bench"
MEMBRANE="$CARGO_TARGET_DIR/$PROFILE/membrane"

# Quick runs write beside the full run's files, never over them.
NAME=results
[ -n "$QUICK" ] && NAME=results-quick
OUT=bench/$NAME.jsonl
[ -n "$APPEND" ] || : > "$OUT"
FAILED=()
run() { # run LABEL COMMAND...: one measurement process; its JSON lines go to the results
  local label="$1"
  log "$label"
  shift
  # One failed measurement must not throw away an hour's run: note it, go on, and fail
  # at the end.
  if ! "$@" >> "$OUT"; then
    log "FAILED: $label"
    FAILED+=("$label")
  fi
}

membrane_side() {
  case "$1" in
    S1) run "S1 membrane" "$BENCH" $QUICK s1 --system membrane --trace "$TRACE"
        run "S1 automerge-rs" "$BENCH" $QUICK s1 --system automerge-rs --trace "$TRACE" ;;
    S3) run "S3 membrane" "$BENCH" $QUICK s3 --trace "$TRACE" ;;
    S4|S10) run "S4+S10 membrane" "$BENCH" $QUICK s4 ;;
    S5) if [ -n "$QUICK" ]; then
          run "S5 membrane" "$BENCH" --quick s5 --membrane "$MEMBRANE"
        else
          for writers in 4 8 16; do
            run "S5 membrane $writers writers" "$BENCH" s5 --membrane "$MEMBRANE" --writers "$writers" --seconds 60
          done
        fi
        # The floor under both: raw Automerge applying others' keystrokes from each run's
        # final text length.
        for writers in 4 8 16; do
          run "S5 apply cost, $writers writers" "$BENCH" $QUICK s5-apply --writers "$writers"
        done ;;
    S7) run "S7 ucan, ed25519, biscuit" "$BENCH" $QUICK s7 ;;
    S8) for system in membrane redb-2pc redb sqlite membrane-group automerge-group \
                      membrane-group-docs automerge-group-docs thread-round-trip; do
          run "S8 $system" "$BENCH" $QUICK s8 --system "$system"
        done ;;
    S9) run "S9 membrane" "$BENCH" $QUICK s9 --membrane "$MEMBRANE" ;;
  esac
}

peer_side() {
  case "$1" in
    S1) run "S1 automerge-js" node bench/js/s1-trace.mjs $QUICK --trace "$TRACE" ;;
    S3) run "S3 automerge-repo" node bench/js/s3-first-sync.mjs $QUICK --trace "$TRACE" ;;
    S4) run "S4 automerge-repo" node bench/js/s4-reconnect.mjs $QUICK ;;
    S10) run "S10 automerge-repo" node bench/js/s10-cold-start.mjs $QUICK ;;
    S5) for writers in 4 8 16; do
          if [ -n "$QUICK" ]; then
            run "S5 automerge-repo" node bench/js/s5-relay.mjs --quick; break
          fi
          run "S5 automerge-repo $writers writers" node bench/js/s5-relay.mjs --writers "$writers" --seconds 60
        done ;;
    S9) run "S9 syncthing" bench/peers/syncthing-idle.sh $QUICK ;;
  esac
}


for rep in $(seq 1 "$REPS"); do
  for scenario in "${SCENARIOS[@]}"; do
    both() {
      if [ "$scenario" = S10 ] && [[ " ${SCENARIOS[*]} " == *" S4 "* ]]; then
        : # measured by S4's run
      else
        membrane_side "$scenario"
      fi
    }
    # Alternate who goes first, so neither always meets a warm or a cold machine.
    if [ $((rep % 2)) -eq 1 ]; then both; peer_side "$scenario"; else peer_side "$scenario"; both; fi
  done
done

HEADER="Run $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m); $REPS repetition(s)${QUICK:+, quick mode (small sizes)}"
"$BENCH" table --input "$OUT" --json "bench/$NAME.json" --markdown "bench/$NAME.md" --header "$HEADER"
cat "bench/$NAME.md"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "${#FAILED[@]} measurement(s) failed:"
  printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi

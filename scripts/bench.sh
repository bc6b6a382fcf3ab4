#!/usr/bin/env bash
# `make bench`: berth against CNCF distribution 2.8.2 (Debian's docker-registry) on this machine.
#
# Builds berth (release), installs docker-registry and nginx with apt-get when missing, measures the
# machine's ceilings (SHA-256 on one core, fsync'd sequential write, loopback HTTP PUT/GET through
# nginx), then runs every `berth bench` scenario against both registries on loopback, each on fresh
# temporary filesystem storage: BENCH_REPEAT rounds (default 3), the order alternating between
# rounds and groups. Group `fresh` adds berth-nofsync (berth with `storage.filesystem.fsync: false`)
# and runs pull-after-push, pull-again, manifest-put-1 and manifest-put-32, then manifest-put-1
# again while a `dd` streams writes to the same disk (rows `manifest-put-1-busy`). Group `catalog`
# writes storage in distribution's layout straight to disk (BENCH_CATALOG="20000 100000 100000":
# repositories of the small catalog, of the large one, and tags of its repository t/many) and
# times pages of 100 (first and middle, BENCH_PAGE_REQUESTS=20 each) of /v2/_catalog and
# tags/list on every registry in turn: rows catalog-20k-first, catalog-20k-middle,
# catalog-100k-…, tags-100k-first, tags-100k-middle. Group `dropcache` runs berth-dropcache
# (`storage.filesystem.dropcache: true`: an upload's pages leave the page cache once on disk)
# through push-chunked-1m, push-chunked-8m, pull-after-push and pull-again, for the "other
# configurations" table beside berth's own rows of the same run: the trade-off of that knob.
#
# PEER='name=command[;name=command…]': other registries to compare with (distribution 3, angos,
# … built locally). Each joins every local-disk group (fresh, large, many, manifest, concurrent,
# resume, huge, catalog; not auth, s3, garage) as one more registry in the interleaved order, and
# gets a column of its own in the report, which also gives berth's ratio to the best of
# distribution and the peers. In the command, {port} is the port to listen on (127.0.0.1),
# {root} a fresh empty storage directory (in the catalog group: the prepared one, in
# distribution's layout), {config} a distribution-style config.yml with both (so
# `PEER='dist-copy=docker-registry serve {config}'` runs a second distribution). The command runs
# through `bash -c 'exec …'`; a peer that does not answer on /v2/ within 10 s fails the run with
# its log's tail.
#
# `berth bench --report` turns the JSON lines into medians and ratios; the result goes to
# BENCHMARKS.md and benches/results/ (results.jsonl, report.md, throughput.svg).
#
# Knobs (environment): BENCH_REPEAT=3 (rounds of the registry scenarios), BENCH_CEILING_REPEAT=5
# (runs of each ceiling), BENCH_COLD_REPEAT=3 (runs of the cold-memory PUT and first touch; 0
# skips), BENCH_BLOB_SIZE=1GiB, BENCH_HUGE_SIZE=4GiB (0 skips the 4 GiB push), BENCH_DURATION=10
# (seconds of manifest-get and manifest-put-*), BENCH_CONCURRENT="50 32MiB 8MiB" (uploads, blob size, PATCH size of
# push-chunked-concurrent), BENCH_RESUME="resume-100m resume-2g", BENCH_S3_BLOB_SIZE=256MiB,
# BENCH_CATALOG="20000 100000 100000", BENCH_PAGE_REQUESTS=20, BENCH_GROUPS="ceilings fresh large
# dropcache many manifest concurrent resume auth catalog s3 garage huge" (which parts run; drop some for a
# quick run), PEER (above), BENCH_PROFILE=1 (perf profiles and flamegraphs of berth; installs
# inferno with cargo when missing), BENCH_TMPDIR=/var/tmp, BENCH_NO_BUILD=1 (use
# target/release/berth as is), BENCH_NO_MD=1 (leave BENCHMARKS.md alone).
#
# The s3 group runs berth on S3 against s3s-fs (installed with `cargo install s3s-fs` when missing,
# about 4 minutes, not counted in the run's time). It is skipped, with the reason printed, only when
# berth refuses REGISTRY_STORAGE=s3 at start; any other failure fails the run.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${CARGO:-cargo}
REPEAT=${BENCH_REPEAT:-3}
CEIL_REPEAT=${BENCH_CEILING_REPEAT:-5}
COLD_REPEAT=${BENCH_COLD_REPEAT:-3}
BLOB_SIZE=${BENCH_BLOB_SIZE:-1GiB}
HUGE_SIZE=${BENCH_HUGE_SIZE:-4GiB}
DURATION=${BENCH_DURATION:-10}
read -r CONC_COUNT CONC_SIZE CONC_CHUNK <<<"${BENCH_CONCURRENT:-50 32MiB 8MiB}"
RESUMES=${BENCH_RESUME-resume-100m resume-2g}
S3_BLOB_SIZE=${BENCH_S3_BLOB_SIZE:-256MiB}
GROUPS_RUN=" ${BENCH_GROUPS:-ceilings fresh large dropcache many manifest concurrent resume auth catalog s3 garage huge} "
read -r CAT_SMALL CAT_LARGE CAT_TAGS <<<"${BENCH_CATALOG:-20000 100000 100000}"
PAGE_REQUESTS=${BENCH_PAGE_REQUESTS:-20}
PROFILE=${BENCH_PROFILE:-}
# Fresh memory is touched and freed right before each ceiling's timed part (see
# ceiling-first-touch in BENCHMARKS.md).
WARM=1536MiB
S3S_VERSION=0.14.1
OUT="$ROOT/benches/results"
BERTH="$ROOT/target/release/berth"
T0=$(date +%s)

log() { printf '[bench %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
want() { [[ $GROUPS_RUN == *" $1 "* ]]; }
die() { log "error: $*"; exit 1; }

# PEER: name=command pairs separated by `;` (see the header).
PEER_NAMES=()
declare -A PEER_CMD=()
IFS=';' read -ra peer_specs <<<"${PEER:-}"
for spec in "${peer_specs[@]}"; do
  spec=$(sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"$spec")
  [ -n "$spec" ] || continue
  name=${spec%%=*}
  [[ $spec == *=* && -n ${spec#*=} && $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
    die "PEER: expected name=command, got: $spec"
  case $name in berth | berth-* | distribution | distribution-* | nginx | machine | dd | openssl | sha2)
    die "PEER: the name $name is taken" ;;
  esac
  [ -z "${PEER_CMD[$name]:-}" ] || die "PEER: $name given twice"
  PEER_NAMES+=("$name")
  PEER_CMD[$name]=${spec#*=}
done
# The registries of the local-disk groups, and of the fresh group (fsync on and off).
LOCAL_REGS=(berth distribution "${PEER_NAMES[@]}")
FRESH_REGS=(berth berth-nofsync distribution "${PEER_NAMES[@]}")

# --- build and tools ---------------------------------------------------------------------------
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "building berth (release)"
  (cd "$ROOT" && $CARGO build --release --quiet)
fi
[ -x "$BERTH" ] || die "$BERTH missing"
BUILD_SECONDS=$(($(date +%s) - T0))

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    # policy-rc.d (present in Debian containers) keeps nginx's package from starting a service.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
      log "apt-get install failed for some of: ${missing[*]}"
  else
    log "not root: cannot apt-get install ${missing[*]}"
  fi
fi
command -v docker-registry >/dev/null 2>&1 || die "docker-registry (CNCF distribution) is not installed"

# Tools built with cargo: their install time is kept apart from the run's.
INSTALL_SECONDS=0
cargo_tool() { # binary crate args...
  local bin=$1 t
  shift
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/$bin" ]; then
    log "installing $bin: cargo install $*"
    t=$(date +%s)
    $CARGO install --quiet "$@" || die "cargo install $* failed"
    INSTALL_SECONDS=$((INSTALL_SECONDS + $(date +%s) - t))
  fi
}
S3S_FS=""
if want s3; then
  cargo_tool s3s-fs s3s-fs --version "$S3S_VERSION" --features binary --locked
  S3S_FS=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
fi
if [ -n "$PROFILE" ]; then
  command -v perf >/dev/null 2>&1 || die "BENCH_PROFILE needs perf (apt-get install linux-perf)"
  cargo_tool inferno-flamegraph inferno --locked
  export PATH="$PATH:$HOME/.cargo/bin"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || NGINX=""
DIST_VERSION=$(docker-registry --version 2>/dev/null | awk '{print $3}')
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  COMMIT="$COMMIT plus uncommitted changes"
fi

# --- workspace, processes, cleanup -------------------------------------------------------------
WORK=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/berth-bench.XXXXXX")
JSON="$WORK/results.jsonl"
: >"$JSON"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    if [ -n "$p" ] && kill "$p" 2>/dev/null; then
      wait "$p" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

wait_http() { # url pid name
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  log "$3 did not start: $(tail -c 2000 "$WORK/$3.log" 2>/dev/null)"
  return 1
}

stop() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Both registries get the same treatment: loopback, fresh filesystem storage, deletes enabled, no
# per-request log lines. berth keeps its default storage.filesystem.fsync: true (distribution
# never fsyncs); berth-nofsync turns it off. berth-s3 is berth with its storage on s3s-fs
# (REGISTRY_STORAGE=s3 and friends). A peer (PEER) runs its own command, with the same config.yml
# written for {config}.
registry_config() { # dir port driver [htpasswd file]: storage in DATA_ROOT or dir/data
  cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
EOF
  if [ "$3" = filesystem ]; then
    printf '  filesystem:\n    rootdirectory: %s\n' "${DATA_ROOT:-$1/data}"
    if [ -n "${NO_FSYNC:-}" ]; then printf '    fsync: false\n'; fi
    if [ -n "${DROP_CACHE:-}" ]; then printf '    dropcache: true\n'; fi
  fi
  cat <<EOF
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
  secret: berth-bench
EOF
  if [ -n "${4:-}" ]; then
    printf 'auth:\n  htpasswd:\n    realm: bench\n    path: %s\n' "$4"
  fi
}

SERVER_PID=""
SERVER_URL=""
SERVER_PORT=""
S3_ENV=()
start_registry() { # name [restart: same storage, same port]
  local name=$1 dir="$WORK/$1" driver=filesystem users=""
  [ "$name" = berth-s3 ] && driver=s3
  [[ $name == *-htpasswd ]] && users="$WORK/bench.htpasswd"
  if [ "${2:-}" != restart ]; then
    rm -rf "$dir"
    mkdir -p "$dir/data"
    SERVER_PORT=$(free_port)
    NO_FSYNC=$([ "$name" = berth-nofsync ] && echo 1 || true) \
      DROP_CACHE=$([ "$name" = berth-dropcache ] && echo 1 || true) \
      registry_config "$dir" "$SERVER_PORT" "$driver" "$users" >"$dir/config.yml"
  fi
  case $name in
    berth | berth-plain | berth-htpasswd | berth-nofsync | berth-dropcache) "$BERTH" serve "$dir/config.yml" >>"$WORK/$name.log" 2>&1 &
      ;;
    distribution-plain | distribution-htpasswd) docker-registry serve "$dir/config.yml" >>"$WORK/$name.log" 2>&1 &
      ;;
    berth-s3) env "${S3_ENV[@]}" "$BERTH" serve "$dir/config.yml" >>"$WORK/$name.log" 2>&1 &
      ;;
    distribution) env -u AWS_CA_BUNDLE docker-registry serve "$dir/config.yml" >>"$WORK/$name.log" 2>&1 &
      ;;
    *)
      [ -n "${PEER_CMD[$name]:-}" ] || die "unknown registry $name"
      local cmd=${PEER_CMD[$name]}
      cmd=${cmd//\{port\}/$SERVER_PORT}
      cmd=${cmd//\{root\}/${DATA_ROOT:-$dir/data}}
      cmd=${cmd//\{config\}/$dir/config.yml}
      echo "+ $cmd" >>"$WORK/$name.log"
      bash -c "exec $cmd" >>"$WORK/$name.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_URL="http://127.0.0.1:$SERVER_PORT"
  wait_http "$SERVER_URL/v2/" "$SERVER_PID" "$name"
}

FAILED=0
FAILURES=()
bench() { # label url pid seed scenarios... [-- extra berth bench arguments]
  local label=$1 url=$2 pid=$3 seed=$4 scenarios=() extra=()
  shift 4
  while [ $# -gt 0 ] && [ "$1" != -- ]; do scenarios+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  extra=("$@")
  sync
  local args=(bench --url "$url" --label "$label" --seed "$seed" --json "${JSON_TO:-$JSON}"
    --blob-size "$BLOB_SIZE" --duration "$DURATION")
  if [ "$HUGE_SIZE" != 0 ]; then args+=(--huge-blob-size "$HUGE_SIZE"); fi
  if [ -n "$pid" ]; then args+=(--server-pid "$pid"); fi
  for s in "${scenarios[@]}"; do args+=(--scenario "$s"); done
  if ! "$BERTH" "${args[@]}" "${extra[@]}" >"$WORK/last-table.txt"; then
    FAILED=1
    FAILURES+=("$label ${scenarios[*]} (seed $seed)")
    log "FAILED: $label ${scenarios[*]} (seed $seed)"
  fi
  sed 's/^/    /' "$WORK/last-table.txt" >&2
}

json_line() { # scenario label bytes seconds
  awk -v s="$1" -v l="$2" -v b="$3" -v t="$4" 'BEGIN {
    printf "{\"scenario\":\"%s\",\"registry\":\"%s\",\"bytes\":%d,\"seconds\":%.6f,\"mb_s\":%.3f,\"ops\":1,\"ops_s\":%.6f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
      s, l, b, t, b / t / 1e6, 1 / t, t * 1000, t * 1000 }' >>"$JSON"
}

# Busy-ness of the machine while this runs: every 5 s, the 1-minute load average, whether a
# compiler runs, and the CPU ticks of every process outside this script's process group.
SAMPLES="$WORK/load.txt"
OTHERS="$WORK/others.txt"
MYPGRP=$(sed 's/.*) //' /proc/$$/stat | cut -d' ' -f3)
(
  while sleep 5; do
    # Compilers stopped (state T, e.g. a long build paused with SIGSTOP for the run) take no CPU.
    echo "$(cut -d' ' -f1 /proc/loadavg) $(ps -eo stat=,comm= | awk '$1 !~ /^T/ && $2 ~ /^(rustc|cargo|cc1|cc1plus|clippy-driver)$/ { n++ } END { print n + 0 }')" >>"$SAMPLES"
    awk -v pg="$MYPGRP" '{ sub(/^.*\) /, ""); if ($3 != pg) print FILENAME, $12 + $13 }' /proc/[0-9]*/stat 2>/dev/null >>"$OTHERS" || true
  done
) &
PIDS+=($!)
MEASURE_T0=$(date +%s)

# --- machine ceilings --------------------------------------------------------------------------
# Every ceiling runs CEIL_REPEAT times; the report prints median, min–max and spread. Before each
# write ceiling: `sync`, a second to settle, and fresh memory touched and freed (WARM): this VM's
# balloon hands freed memory back to the hypervisor within seconds, and a page-cache write into
# memory taken back runs 3-5x slower (ceiling-first-touch and http-put-cold show by how much).
warm() { "$BERTH" bench --scenario ceiling-first-touch --blob-size "$WARM" --no-progress >/dev/null 2>&1 || true; }
settle() { sync; sleep "${1:-1}"; }
NGINX_NOTE=""
if want ceilings; then
log "ceilings: SHA-256 on one core"
for r in $(seq 1 "$CEIL_REPEAT"); do
  bench sha2 "http://127.0.0.1:9" "" "$r" ceiling-sha256
done
if command -v openssl >/dev/null 2>&1; then
  kbps=$(openssl speed -evp sha256 -bytes 1048576 -seconds 3 2>/dev/null | awk '$1 == "sha256" { v = $NF; sub(/k$/, "", v); print v }')
  if [ -n "$kbps" ]; then awk -v k="$kbps" 'BEGIN { printf "{\"scenario\":\"ceiling-sha256-openssl\",\"registry\":\"openssl\",\"mb_s\":%.3f}\n", k / 1000 }' >>"$JSON"; fi
fi

log "ceilings: sequential write + fsync (dd, 1 GiB)"
dd_seconds() { dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=1024 "$@" 2>&1 | sed -n 's/.*copied, \([0-9.e+-]*\) s.*/\1/p'; rm -f "$WORK/dd.bin"; }
for r in $(seq 1 "$CEIL_REPEAT"); do
  settle
  warm
  s=$(dd_seconds conv=fsync)
  if [ -n "$s" ]; then json_line ceiling-fsync-write dd $((1 << 30)) "$s"; fi
done
for r in $(seq 1 "$CEIL_REPEAT"); do
  settle
  s=$(dd_seconds oflag=direct conv=fsync || true)
  if [ -n "$s" ]; then json_line ceiling-direct-write dd $((1 << 30)) "$s"; fi
done

if [ -n "$NGINX" ]; then
  log "ceilings: loopback HTTP through nginx (PUT and GET of the large blob)"
  NG="$WORK/nginx"
  mkdir -p "$NG/www/bench" "$NG/tmp" "$NG/logs"
  NPORT=$(free_port)
  # nginx's DAV PUT streams the body into a temporary file under client_body_temp_path and renames
  # it over the target: both are under $NG, one filesystem, so it is a rename, never a copy. The
  # target is removed before each PUT (a rename over an existing 1 GiB file frees its pages inside
  # the request and halves the figure).
  {
    [ "$(id -u)" = 0 ] && echo "user root;"
    cat <<EOF
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/logs/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $NG/tmp;
  proxy_temp_path $NG/tmp;
  fastcgi_temp_path $NG/tmp;
  uwsgi_temp_path $NG/tmp;
  scgi_temp_path $NG/tmp;
  client_max_body_size 0;
  client_body_buffer_size 1m;
  server {
    listen 127.0.0.1:$NPORT;
    root $NG/www;
    location /bench/ { dav_methods PUT; create_full_put_path on; }
  }
}
EOF
  } >"$NG/nginx.conf"
  "$NGINX" -p "$NG" -c "$NG/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  if wait_http "http://127.0.0.1:$NPORT/" "$NGINX_PID" nginx; then
    for r in $(seq 1 "$CEIL_REPEAT"); do
      rm -f "$NG/www/bench/blob"
      settle
      bench nginx "http://127.0.0.1:$NPORT" "" "$r" http-put -- --warm-memory "$WARM"
      bench nginx "http://127.0.0.1:$NPORT" "" "$r" http-get
      bench nginx "http://127.0.0.1:$NPORT" "" "$r" http-get-hashed
    done
    # The same PUT, and a first touch of fresh memory, after the machine sat idle long enough for
    # freed memory to go back to the hypervisor: what a write into the page cache meets then.
    for r in $(seq 1 "$COLD_REPEAT"); do
      rm -f "$NG/www/bench/blob"
      settle 8
      JSON_TO="$WORK/cold.jsonl" bench nginx "http://127.0.0.1:$NPORT" "" "$r" http-put
      settle 8
      bench machine "http://127.0.0.1:9" "" "$r" ceiling-first-touch
    done
    if [ -s "$WORK/cold.jsonl" ]; then
      sed 's/"scenario":"http-put"/"scenario":"http-put-cold"/' "$WORK/cold.jsonl" >>"$JSON"
    fi
  else
    NGINX_NOTE="nginx did not start: no loopback HTTP ceiling."
  fi
  stop "$NGINX_PID"
  rm -rf "$NG"
else
  NGINX_NOTE="nginx could not be installed: no loopback HTTP ceiling."
fi
fi

# --- the registries ----------------------------------------------------------------------------
GROUPS_LARGE=(push-monolithic push-single-post push-chunked-1m push-chunked-8m push-chunked-64m pull-large pull-large-nohash)
GROUPS_MANY=(push-small push-medium)
GROUPS_MANIFEST=(manifest-get)
# berth with storage.filesystem.dropcache: pushes that leave no pages behind, pulls that read the
# disk (beside berth's own rows of groups large and fresh).
GROUPS_DROPCACHE=(push-chunked-1m push-chunked-8m pull-after-push pull-again)

# The registries in the order of a round and group: as given, or reversed every other time.
ordered() { # round group-index names...
  local round=$1 g=$2
  shift 2
  if (((round + g) % 2 == 0)); then printf '%s\n' "$@"; else printf '%s\n' "$@" | tac; fi
}

run_group() { # round group-index scenarios...
  local round=$1 g=$2 name
  shift 2
  for name in $(ordered "$round" "$g" "${LOCAL_REGS[@]}"); do
    start_registry "$name" || die "$name did not start"
    log "round $round: $name: $*"
    bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" "$@"
    stop "$SERVER_PID"
    rm -rf "${WORK:?}/$name"
  done
}

# Resuming after kill -9: push N bytes of each resume scenario, SIGKILL the registry, start it again
# on the same storage and port, then status, the rest, completion, and the verify pass.
run_resume() { # round
  local round=$1 state name
  for name in $(ordered "$round" 1 "${LOCAL_REGS[@]}"); do
    state="$WORK/resume-$name.json"
    rm -f "$state"
    start_registry "$name" || die "$name did not start"
    log "round $round: $name: $RESUMES, kill -9, restart, resume"
    # shellcheck disable=SC2086
    bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" $RESUMES -- --resume-phase prepare --resume-file "$state"
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    start_registry "$name" restart || die "$name did not start again after kill -9"
    # shellcheck disable=SC2086
    bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" $RESUMES -- --resume-phase finish --resume-file "$state"
    stop "$SERVER_PID"
    rm -rf "${WORK:?}/$name"
  done
}

# Reads right after a push, and manifest PUTs on 1 and 32 connections, with fsync on and off; then
# manifest-put-1 again (other seed: new manifests) while a dd streams 1 GiB writes, each synced, to
# the storage's disk: rows manifest-put-1-busy (its verify pass is checked, not reported).
GROUPS_FRESH=(pull-after-push pull-again manifest-put-1 manifest-put-32)
busy_writer() {
  local dd_pid=""
  trap 'kill "$dd_pid" 2>/dev/null; exit 0' TERM
  while :; do
    dd if=/dev/zero of="$WORK/busy.bin" bs=1M count=1024 conv=fsync status=none &
    dd_pid=$!
    wait "$dd_pid" || true
  done
}
run_fresh() { # round
  local round=$1 name busy
  for name in $(ordered "$round" 4 "${FRESH_REGS[@]}"); do
    start_registry "$name" || die "$name did not start"
    log "round $round: $name: ${GROUPS_FRESH[*]}, then manifest-put-1 beside a writing dd"
    bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" "${GROUPS_FRESH[@]}"
    busy_writer &
    busy=$!
    PIDS+=("$busy")
    sleep 1
    JSON_TO="$WORK/busy.jsonl" bench "$name" "$SERVER_URL" "$SERVER_PID" "$((round + 100))" manifest-put-1
    stop "$busy"
    rm -f "$WORK/busy.bin"
    stop "$SERVER_PID"
    rm -rf "${WORK:?}/$name"
  done
}

CONC_ARGS=(-- --concurrent-count "$CONC_COUNT" --concurrent-size "$CONC_SIZE" --concurrent-chunk "$CONC_CHUNK")
for round in $(seq 1 "$REPEAT"); do
  if want fresh; then run_fresh "$round"; fi
  if want large; then run_group "$round" 0 "${GROUPS_LARGE[@]}"; fi
  if want dropcache; then
    start_registry berth-dropcache || die "berth-dropcache did not start"
    log "round $round: berth-dropcache: ${GROUPS_DROPCACHE[*]}"
    bench berth-dropcache "$SERVER_URL" "$SERVER_PID" "$round" "${GROUPS_DROPCACHE[@]}"
    stop "$SERVER_PID"
    rm -rf "${WORK:?}/berth-dropcache"
  fi
  if want many; then run_group "$round" 1 "${GROUPS_MANY[@]}"; fi
  if want manifest; then run_group "$round" 2 "${GROUPS_MANIFEST[@]}"; fi
  if want concurrent && [ "$CONC_COUNT" != 0 ]; then run_group "$round" 3 push-chunked-concurrent "${CONC_ARGS[@]}"; fi
  if want resume && [ -n "$RESUMES" ]; then run_resume "$round"; fi
done
# htpasswd logins on (berth-htpasswd, distribution-htpasswd) against the same registry without
# (berth-plain, distribution-plain), same sizes, alternating: every request carries Basic
# credentials, as a CI's do. The user's bcrypt entry has cost 10 (distribution's own default).
# All four appear in the "other configurations" table; compare -htpasswd with -plain there (the
# ÷ berth and ÷ distribution columns refer to the main runs, with other sizes).
AUTH_GROUP=(push-chunked-1m push-small push-medium)
# Fewer requests than the main groups: distribution pays a bcrypt check on every one.
AUTH_ARGS=(--small-count 500 --medium-count 100)
if want auth; then
  MAIN_BLOB_SIZE=$BLOB_SIZE
  BLOB_SIZE=${BENCH_AUTH_BLOB_SIZE:-256MiB}
  export BERTH_BENCH_PASSWORD="bench-$$"
  "$BERTH" htpasswd --cost 10 "$WORK/bench.htpasswd" bench <<<"$BERTH_BENCH_PASSWORD" 2>/dev/null
  for round in $(seq 1 "$REPEAT"); do
    # The baselines get labels of their own: the group's smaller sizes must not mix into the
    # main table's berth and distribution medians.
    order=(berth-plain berth-htpasswd distribution-plain distribution-htpasswd)
    ((round % 2 == 1)) || order=(distribution-htpasswd distribution-plain berth-htpasswd berth-plain)
    for name in "${order[@]}"; do
      start_registry "$name" || die "$name did not start"
      log "round $round: $name: ${AUTH_GROUP[*]}"
      if [[ $name == *-htpasswd ]]; then
        bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" "${AUTH_GROUP[@]}" -- "${AUTH_ARGS[@]}" --user bench
      else
        bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" "${AUTH_GROUP[@]}" -- "${AUTH_ARGS[@]}"
      fi
      stop "$SERVER_PID"
      rm -rf "${WORK:?}/$name"
    done
  done
  unset BERTH_BENCH_PASSWORD
  BLOB_SIZE=$MAIN_BLOB_SIZE
fi
if want huge && [ "$HUGE_SIZE" != 0 ]; then
  run_group 1 1 push-monolithic-4g
fi
if [ -s "$WORK/busy.jsonl" ]; then
  sed 's/"scenario":"manifest-put-1"/"scenario":"manifest-put-1-busy"/' "$WORK/busy.jsonl" | grep -v '"scenario":"verify"' >>"$JSON" || true
fi

# --- listing pages over a large storage ---------------------------------------------------------
# Storage in distribution's layout written straight to disk (link files hold `sha256:<hex>`, no
# newline; the blobs they name need not exist for listing): repositories c/r000000… with one tag
# and one layer link each, and in the large tree one more, t/many, with many tags. Every registry
# serves the same tree in turn; `berth bench` counts a short page as an error (distribution 2.8
# ignores n= on tags/list and sends every tag: noted on its rows).
make_catalog() { # dir repositories tags
  python3 - "$@" <<'PY'
import hashlib, os, sys
root, repos, tags = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = os.path.join(root, "docker/registry/v2/repositories")
def link(path, digest):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(digest)
def repo(name, tag_names):
    hexd = hashlib.sha256(name.encode()).hexdigest()
    # distribution 2.8 lists a repository only when it has _layers.
    link(os.path.join(base, name, "_layers/sha256", hexd, "link"), "sha256:" + hexd)
    d = os.path.join(base, name, "_manifests")
    link(os.path.join(d, "revisions/sha256", hexd, "link"), "sha256:" + hexd)
    for t in tag_names:
        link(os.path.join(d, "tags", t, "current/link"), "sha256:" + hexd)
for i in range(repos):
    repo(f"c/r{i:06d}", ["latest"])
if tags:
    repo("t/many", [f"t{i:06d}" for i in range(tags)])
PY
}
count_label() { if (($1 % 1000 == 0)); then echo "$(($1 / 1000))k"; else echo "$1"; fi; }
run_catalog() { # repositories tags
  local repos=$1 tags=$2 tree="$WORK/catalog" name round t
  local rl tl
  rl=$(count_label "$repos")
  tl=$(count_label "$tags")
  rm -rf "$tree"
  t=$(date +%s)
  make_catalog "$tree" "$repos" "$tags"
  log "catalog: wrote $repos repositories and $tags tags of t/many in $(($(date +%s) - t)) s"
  local scenarios=(catalog-first catalog-middle) args=(--catalog-last "c/r$(printf %06d $((repos / 2)))")
  if [ "$tags" != 0 ]; then
    scenarios+=(tags-first tags-middle)
    args+=(--tags-repo t/many --tags-last "t$(printf %06d $((tags / 2)))")
  fi
  for round in $(seq 1 "$REPEAT"); do
    for name in $(ordered "$round" 5 "${LOCAL_REGS[@]}"); do
      DATA_ROOT=$tree start_registry "$name" || die "$name did not start"
      log "round $round: $name: ${scenarios[*]} over $repos repositories"
      : >"$WORK/catalog.jsonl"
      JSON_TO="$WORK/catalog.jsonl" bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" "${scenarios[@]}" -- \
        "${args[@]}" --page-requests "$PAGE_REQUESTS"
      sed -e "s/\"scenario\":\"catalog-/\"scenario\":\"catalog-$rl-/" -e "s/\"scenario\":\"tags-/\"scenario\":\"tags-$tl-/" \
        "$WORK/catalog.jsonl" >>"$JSON"
      stop "$SERVER_PID"
      rm -rf "${WORK:?}/$name"
    done
  done
  rm -rf "$tree"
}
if want catalog; then
  run_catalog "$CAT_SMALL" 0
  run_catalog "$CAT_LARGE" "$CAT_TAGS"
fi

# --- berth on S3 (s3s-fs) ----------------------------------------------------------------------
# distribution's S3 driver cannot run on s3s-fs (it lists multipart uploads, which s3s-fs does not
# implement), so there is no like-for-like comparison: berth-s3 is reported on its own, with
# berth's and distribution's filesystem figures beside it for information.
S3_NOTE=""
if want s3; then
  S3DIR="$WORK/s3"
  mkdir -p "$S3DIR/berth"
  S3PORT=$(free_port)
  "$S3S_FS" --host 127.0.0.1 --port "$S3PORT" --access-key berth-bench --secret-key berth-bench-secret "$S3DIR" >"$WORK/s3s-fs.log" 2>&1 &
  S3S_PID=$!
  PIDS+=("$S3S_PID")
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$S3PORT") 2>/dev/null && break
    kill -0 "$S3S_PID" 2>/dev/null || die "s3s-fs did not start: $(tail -c 2000 "$WORK/s3s-fs.log")"
    sleep 0.1
  done
  S3_ENV=(REGISTRY_STORAGE=s3 REGISTRY_STORAGE_S3_ACCESSKEY=berth-bench REGISTRY_STORAGE_S3_SECRETKEY=berth-bench-secret
    REGISTRY_STORAGE_S3_REGION=us-east-1 REGISTRY_STORAGE_S3_REGIONENDPOINT="http://127.0.0.1:$S3PORT"
    REGISTRY_STORAGE_S3_BUCKET=berth REGISTRY_STORAGE_S3_FORCEPATHSTYLE=true REGISTRY_STORAGE_S3_SECURE=false)
  for round in $(seq 1 "$REPEAT"); do
    if ! start_registry berth-s3; then
      if ! kill -0 "$SERVER_PID" 2>/dev/null && grep -qiE 's3.*(not supported|unsupported|unknown)|(not supported|unsupported|unknown).*s3' "$WORK/berth-s3.log"; then
        S3_NOTE="skipped: this berth refuses REGISTRY_STORAGE=s3 at start ($(grep -iE 's3' "$WORK/berth-s3.log" | head -1 | cut -c1-200))."
        log "S3 rows $S3_NOTE"
        break
      fi
      die "berth on S3 (s3s-fs) did not start: $(tail -c 2000 "$WORK/berth-s3.log")"
    fi
    log "round $round: berth-s3: push-chunked-1m push-chunked-8m push-chunked-64m ($S3_BLOB_SIZE)"
    BLOB_SIZE_SAVED=$BLOB_SIZE
    BLOB_SIZE=$S3_BLOB_SIZE
    bench berth-s3 "$SERVER_URL" "$SERVER_PID" "$round" push-chunked-1m push-chunked-8m push-chunked-64m
    BLOB_SIZE=$BLOB_SIZE_SAVED
    stop "$SERVER_PID"
    rm -rf "${S3DIR:?}/berth" && mkdir -p "$S3DIR/berth"
  done
  stop "$S3S_PID"
  rm -rf "$S3DIR"
fi

# --- both registries on a 3-node Garage cluster --------------------------------------------------
# berth and distribution on the same replicated store (scripts/garage-cluster.sh: 3 containers,
# replication factor 3), both through node 1's S3 API, each round on a bucket of its own, the
# order alternating. berth locks its uploads in Redis there (Garage ignores conditional writes;
# that is how several instances run on it, docs/scaling.md), distribution locks nothing.
# Blob pulls are measured twice: redirected to a presigned URL on Garage (both registries'
# default on S3) and proxied through the registry (storage.redirect.disable: true). The store's
# own PUT and GET of a blob of the same size (curl with SigV4, straight to node 1) are the ceiling.
# Results go to their own file and table (benches/results/garage.{jsonl,md}).
GARAGE_JSON="$WORK/garage.jsonl"
: >"$GARAGE_JSON"
garage_config() { # dir port bucket redirect-disable [redis address]
  cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: "$GARAGE_KEY_ID"
    secretkey: "$GARAGE_SECRET"
    region: "$GARAGE_REGION"
    regionendpoint: "$GARAGE_ENDPOINT_1"
    bucket: "$3"
    forcepathstyle: true
    secure: false
    v4auth: true
  delete:
    enabled: true
  redirect:
    disable: $4
http:
  addr: 127.0.0.1:$2
  secret: berth-bench
EOF
  if [ -n "${5:-}" ]; then printf 'redis:\n  addr: %s\n' "$5"; fi
}
start_on_garage() { # name bucket redirect-disable
  local name=$1 dir="$WORK/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  SERVER_PORT=$(free_port)
  case $name in
    berth-garage)
      garage_config "$dir" "$SERVER_PORT" "$2" "$3" "127.0.0.1:$REDIS_PORT" >"$dir/config.yml"
      "$BERTH" serve "$dir/config.yml" >>"$WORK/$name.log" 2>&1 &
      ;;
    distribution-garage)
      garage_config "$dir" "$SERVER_PORT" "$2" "$3" >"$dir/config.yml"
      env -u AWS_CA_BUNDLE docker-registry serve "$dir/config.yml" >>"$WORK/$name.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_URL="http://127.0.0.1:$SERVER_PORT"
  wait_http "$SERVER_URL/v2/" "$SERVER_PID" "$name"
}
# `1GiB`, `64m`, `4096` in bytes, as `berth bench` reads sizes (K, M, G, T are powers of 1024).
bytes_of() {
  python3 -c 'import re, sys
m = re.fullmatch(r"([0-9.]+)\s*([kmgt]?)i?b?", sys.argv[1].strip().lower())
print(int(float(m[1]) * 1024 ** " kmgt".index(m[2] or " ")))' "$1"
}
# A PUT and a GET of N bytes straight to the store: curl's own SigV4 signing, through node 1.
garage_ceiling() { # round
  local url="$GARAGE_ENDPOINT_1/bench-ceiling-$1/blob" out
  local sign=(--aws-sigv4 "aws:amz:$GARAGE_REGION:s3" --user "$GARAGE_KEY_ID:$GARAGE_SECRET"
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -sS --fail)
  bash "$ROOT/scripts/garage-cluster.sh" bucket "$GARAGE_DIR" "bench-ceiling-$1"
  out=$(curl "${sign[@]}" -T "$WORK/garage-blob" -o /dev/null -w '%{size_upload} %{time_total}' "$url") ||
    die "PUT to Garage failed"
  read -r bytes secs <<<"$out"
  JSON="$GARAGE_JSON" json_line ceiling-store-put garage "${bytes%.*}" "$secs"
  sync
  out=$(curl "${sign[@]}" -o /dev/null -w '%{size_download} %{time_total}' "$url") || die "GET from Garage failed"
  read -r bytes secs <<<"$out"
  JSON="$GARAGE_JSON" json_line ceiling-store-get garage "${bytes%.*}" "$secs"
}
if want garage; then
  command -v docker >/dev/null 2>&1 || die "the garage group needs the Docker engine"
  command -v redis-server >/dev/null 2>&1 || die "the garage group needs redis-server (make deps)"
  cargo_tool garage garage --version 2.5.0 --locked --no-default-features --features bundled-libs,lmdb
  GARAGE_DIR="$WORK/garage"
  log "garage: starting a 3-node cluster"
  bash "$ROOT/scripts/garage-cluster.sh" up "$GARAGE_DIR" || die "the Garage cluster did not start"
  # shellcheck disable=SC1091
  . "$GARAGE_DIR/env"
  trap 'bash "$ROOT/scripts/garage-cluster.sh" down "$GARAGE_DIR"; cleanup' EXIT
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  head -c "$(bytes_of "$BLOB_SIZE")" /dev/urandom >"$WORK/garage-blob"
  for round in $(seq 1 "$REPEAT"); do
    settle
    garage_ceiling "$round"
    order=(berth-garage distribution-garage)
    ((round % 2 == 1)) || order=(distribution-garage berth-garage)
    for name in "${order[@]}"; do
      bucket="bench-${name%-garage}-$round"
      bash "$ROOT/scripts/garage-cluster.sh" bucket "$GARAGE_DIR" "$bucket"
      start_on_garage "$name" "$bucket" false || die "$name did not start on Garage"
      log "round $round: $name: push-chunked-8m push-chunked-64m pull-large push-small (redirected pulls)"
      JSON_TO="$GARAGE_JSON" bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" \
        push-chunked-8m push-chunked-64m pull-large push-small
      stop "$SERVER_PID"
      start_on_garage "$name" "$bucket" true || die "$name did not start on Garage"
      log "round $round: $name: pull-large (proxied)"
      JSON_TO="$WORK/garage-proxied.jsonl" bench "$name" "$SERVER_URL" "$SERVER_PID" "$round" pull-large
      stop "$SERVER_PID"
    done
  done
  rm -f "$WORK/garage-blob"
  sed 's/"scenario":"pull-large"/"scenario":"pull-large-proxied"/' "$WORK/garage-proxied.jsonl" >>"$GARAGE_JSON"
  bash "$ROOT/scripts/garage-cluster.sh" down "$GARAGE_DIR"
  trap cleanup EXIT
  mkdir -p "$OUT"
  cp "$GARAGE_JSON" "$OUT/garage.jsonl"
  "$BERTH" bench --report "$GARAGE_JSON" --candidate berth-garage --baseline distribution-garage \
    --markdown "$OUT/garage.md" --svg "$OUT/garage.svg" >/dev/null
  {
    cat <<EOF
## On a 3-node Garage cluster

berth (commit $COMMIT) and CNCF distribution $DIST_VERSION, both with their S3 storage on the same
Garage 2.5.0 cluster (3 nodes in containers on this machine, replication factor 3, consistent
mode; \`scripts/garage-cluster.sh\`), each round on a fresh bucket, through node 1's S3 API,
$REPEAT rounds alternating; produced by \`make bench\` (group \`garage\`;
\`BENCH_GROUPS=garage make bench\` reruns this section alone). berth-garage locks its uploads in
Redis (a local \`redis-server\`): Garage ignores conditional writes, and this is how several
instances share a bucket there; distribution coordinates nothing. Blobs of $BLOB_SIZE;
\`pull-large\` is redirected (307 to a presigned Garage URL, both registries' default on S3),
\`pull-large-proxied\` streams through the registry (\`storage.redirect.disable: true\`, a
restart on the same bucket). \`ceiling-store-put\`/\`-get\` are curl's own SigV4 PUT and GET of
a blob of the same size straight to node 1: the store's speed, which a redirected pull can at
best match. All three nodes, the registry, Redis and the load generator share the machine's
$(nproc) cores.

![throughput per scenario on Garage](benches/results/garage.svg)

EOF
    cat "$OUT/garage.md"
  } >"$OUT/garage-section.md"
fi

# --- profiles of berth (BENCH_PROFILE=1) -------------------------------------------------------
# perf records the berth process (cpu-clock, DWARF call graphs: the release profile already keeps
# line tables, `debug = 1` in Cargo.toml) during the timed part of each scenario only, switched on
# and off by `berth bench --perf-ctl`; folded with inferno, drawn as flamegraphs.
PROFILE_ARGS=()
if [ -n "$PROFILE" ]; then
  mkdir -p "$OUT"
  rm -f "$OUT"/flame-*.svg
  start_registry berth || die "berth did not start"
  for sc in push-chunked-1m push-small pull-large-nohash; do
    log "profile: berth: $sc"
    rm -f "$WORK/perf.ctl" "$WORK/perf.ack" "$WORK/perf.data"
    mkfifo "$WORK/perf.ctl" "$WORK/perf.ack"
    exec 8<>"$WORK/perf.ctl" 9<>"$WORK/perf.ack"
    perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -D -1 \
      --control "fifo:$WORK/perf.ctl,$WORK/perf.ack" -p "$SERVER_PID" -o "$WORK/perf.data" \
      >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
    sleep 1
    JSON_TO="$WORK/profile.jsonl" bench berth "$SERVER_URL" "$SERVER_PID" 1 "$sc" -- --no-verify \
      --perf-ctl "$WORK/perf.ctl" --perf-ack "$WORK/perf.ack" --repo-prefix "profile/$sc"
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    exec 8>&- 9>&-
    if perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"$WORK/$sc.folded" && [ -s "$WORK/$sc.folded" ]; then
      inferno-flamegraph --minwidth 0.5 --title "berth: $sc (server CPU, timed part)" <"$WORK/$sc.folded" >"$OUT/flame-$sc.svg"
      PROFILE_ARGS+=(--profile "$sc=$WORK/$sc.folded=benches/results/flame-$sc.svg")
    else
      log "profile of $sc failed: $(tail -c 500 "$WORK/perf.log")"
      FAILED=1
      FAILURES+=("profile $sc")
    fi
  done
  stop "$SERVER_PID"
  rm -rf "${WORK:?}/berth"
fi

# --- report ------------------------------------------------------------------------------------
# BENCHMARKS.md keeps sections of other runs between markers: the container image's
# (make bench-image), the small-push profile (benches/results/push-small-profile.md, written by
# hand from strace and perf) and the Garage cluster's (this script's garage group).
section() { # marker file: the file between markers, if it exists
  if [ -f "$2" ]; then printf '\n<!-- %s -->\n%s\n<!-- /%s -->\n' "$1" "$(cat "$2")" "$1"; fi
}
if [ "$GROUPS_RUN" = " garage " ]; then
  [ -n "${BENCH_NO_MD:-}" ] || splice_section "$ROOT/BENCHMARKS.md" garage-bench "$OUT/garage-section.md"
  log "done in $(($(date +%s) - T0 - INSTALL_SECONDS))s; wrote the Garage section of BENCHMARKS.md"
  cat "$OUT/garage.md"
  [ "$FAILED" = 0 ] || die "some scenarios failed: ${FAILURES[*]}"
  exit 0
fi
mkdir -p "$OUT"
cp "$JSON" "$OUT/results.jsonl"
PEER_ARGS=()
for p in "${PEER_NAMES[@]}"; do PEER_ARGS+=(--peer "$p"); done
"$BERTH" bench --report "$JSON" --markdown "$OUT/report.md" --svg "$OUT/throughput.svg" "${PROFILE_ARGS[@]}" "${PEER_ARGS[@]}" >/dev/null
TOTAL=$(($(date +%s) - T0 - INSTALL_SECONDS))
log "done in ${TOTAL}s (build ${BUILD_SECONDS}s; cargo installs ${INSTALL_SECONDS}s, not counted)"

MEASURED=$(($(date +%s) - MEASURE_T0))
busy=$(awk '{ n++; if ($1 > max) max = $1; if ($2 > 0) c++ } END { printf "%d %.2f %d", n, max, c }' "$SAMPLES" 2>/dev/null || echo "0 0 0")
read -r nsamples maxload compiling <<<"$busy"
# CPU seconds of other processes: per PID, last sample minus first (USER_HZ = 100).
others=$(awk '{ if (!($1 in first)) first[$1] = $2; last[$1] = $2 } END { for (p in first) t += last[p] - first[p]; printf "%.0f", t / 100 }' "$OTHERS" 2>/dev/null || echo 0)
share=$(awk -v o="$others" -v m="$MEASURED" -v n="$(nproc)" 'BEGIN { printf "%.0f", (m > 0 ? 100 * o / (m * n) : 0) }')
if [ "${compiling:-0}" -gt 0 ] || [ "$share" -ge 5 ]; then
  BUSY="**The machine was busy:** processes outside the benchmark used $others CPU-seconds during the $MEASURED s of measurement ($share % of the machine's $(nproc) cores); compilers (rustc/cargo) were running in ${compiling:-0} of $nsamples samples taken every 5 s; the 1-minute load average reached $maxload. Both registries met the same interference (rounds alternate), but absolute numbers are lower and noisier than on an idle machine."
else
  BUSY="The machine was otherwise idle: processes outside the benchmark used $others CPU-seconds during the $MEASURED s of measurement ($share % of $(nproc) cores); the 1-minute load average peaked at $maxload (the load generator and the server make up most of it)."
fi
log "$BUSY"

if [ -z "${BENCH_NO_MD:-}" ]; then
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  shani=$(grep -q -w sha_ni /proc/cpuinfo && echo "with SHA extensions (sha_ni)" || echo "without SHA extensions")
  mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
  fs=$(df -T "${BENCH_TMPDIR:-/var/tmp}" | awk 'NR == 2 { print $2 " on " $1 }')
  {
    cat <<EOF
# Benchmarks

berth (commit $COMMIT) against CNCF distribution $DIST_VERSION (Debian's \`docker-registry\`), on
the same machine in the same run, produced by \`make bench\` (\`scripts/bench.sh\`, which drives
\`berth bench\`). Ratios are berth ÷ distribution of medians over $REPEAT rounds; higher is better
for throughput, and the chart scales each scenario's two bars to the larger one.

![throughput per scenario](benches/results/throughput.svg)

$(cat "$OUT/report.md")
$(section image-bench "$ROOT/benches/results/image.md")
$(section push-small-profile "$ROOT/benches/results/push-small-profile.md")
$(section garage-bench "$OUT/garage-section.md")

## How this was measured

- Machine: $(nproc) cores ($cpu, $shani), $mem of memory, Linux $(uname -r), storage: $fs.
  The load generator runs on the same cores as the server it measures.
- $BUSY
- Each registry runs on 127.0.0.1 with fresh filesystem storage under \`${BENCH_TMPDIR:-/var/tmp}\`,
  restarted for every group of scenarios (large blobs, many blobs, manifests), \`log.level: warn\`
  and the access log off for both. berth keeps its default \`storage.filesystem.fsync: true\`
  (data and directory entries are synced before a push is acknowledged); distribution never
  fsyncs. \`sync\` runs before every group so neither pays for the other's dirty pages.
- Blobs: $BLOB_SIZE for the large scenarios (deterministic pseudo-random content, generated while
  streaming; digests computed before the clock starts), 2,000 × 4 KiB at concurrency 32,
  200 × 1 MiB at concurrency 16, a small OCI image whose manifest is fetched by tag at concurrency
  64 for ${DURATION} s. \`push-monolithic-4g\` ($HUGE_SIZE) runs once, for peak memory.
- Server CPU seconds (utime + stime from \`/proc/PID/stat\`) and peak RSS (\`VmHWM\` from
  \`/proc/PID/status\`, reset through \`/proc/PID/clear_refs\` at the start of each scenario) cover
  the timed part of each scenario only.
- A \`verify\` pass follows every group: each blob is HEADed and read back with its digest checked,
  each manifest fetched by tag and digest; any failure fails \`make bench\`.
- distribution does not implement single-request \`POST ?digest=\` uploads: it answers 202, and
  \`berth bench\` then PUTs the blob as a client must (noted in \`results.jsonl\`).
- Ceilings: \`ceiling-sha256\` hashes in memory with the \`sha2\` crate berth uses; openssl's figure
  is \`openssl speed -evp sha256 -bytes 1048576 -seconds 3\`; writes are
  \`dd if=/dev/zero bs=1M count=1024 conv=fsync\` (and with \`oflag=direct\`) on the storage's
  filesystem; HTTP is nginx ($("${NGINX:-true}" -v 2>&1 | sed 's/.*nginx\///'), DAV \`PUT\` into a file, \`GET\` with sendfile from page cache)
  driven by the same client. ${NGINX_NOTE}
- Each ceiling runs ${CEIL_REPEAT} times (the table gives median, min – max and spread). Why the
  loopback PUT used to move between runs (1482, then 768 MB/s; 548 – 1995 within one run): nginx
  streams the body into a temporary file on the same filesystem and renames it over the target (a
  rename, no copy, no fsync), so the PUT is a 1 GiB write into the page cache, and on this virtual
  machine that depends on the memory it lands in: the balloon device reports freed memory to the
  hypervisor (virtio-balloon free page reporting) and a DAMON \`pageout\` scheme evicts page cache
  idle for ~30 s, and the first touch of a page the host has taken back costs a host fault. While
  this was investigated, touching 1 GiB of fresh memory ran at ~3,000 MB/s right after the same
  amount had been freed but at 400 – 950 MB/s after 6 s idle, and one 1 GiB \`dd\` into the page
  cache took 0.24 – 0.73 s over five back-to-back runs; how much the host takes back varies, so
  \`ceiling-first-touch\` and \`http-put-cold\` (both after 8 s idle, memory not warmed) show what
  it was in this run. Before each write ceiling the script now runs \`sync\`, waits a second, and
  touches and frees ${WARM} of memory (so the write gets pages the host still backs), and removes
  the PUT's target first (a rename over an existing 1 GiB file frees its pages inside the request
  and alone halved the figure). CPU taken by other processes (see above) is the other source of
  spread, which no settling removes. The registries' scenarios are not warmed: both meet the same
  machine, alternating.
- \`pull-after-push\`: a new ${BLOB_SIZE} blob PUT in one request (untimed) and at once read back
  by digest, hashed; \`pull-again\` reads it a second time. \`manifest-put-1\` / \`-32\`: a new image
  manifest under a new tag per request (config and layer pushed once, untimed) for ${DURATION} s on
  one connection / 32; \`manifest-put-1-busy\`: the same while a \`dd\` writes 1 GiB files with
  \`conv=fsync\` to the same disk. These run on berth, berth-nofsync (\`storage.filesystem.fsync:
  false\`), distribution$(for p in "${PEER_NAMES[@]}"; do printf ', %s' "$p"; done), each on fresh storage.
- \`berth-dropcache\` (other configurations): berth with \`storage.filesystem.dropcache: true\`, which
  drops an upload's pages from the page cache once they are on disk (berth's default keeps them,
  as the kernel does for any writer), through push-chunked-1m, push-chunked-8m, pull-after-push
  and pull-again, on fresh storage after the large group of each round: what the knob gains on
  pushes (no fresh page-cache memory to fault in) against what it costs the first pull (a read
  from disk), beside berth's own rows of the same run.
- Listing rows (\`catalog-<N>-first\`/\`-middle\`, \`tags-<N>-…\`): storage in distribution's layout
  written straight to disk (${CAT_SMALL} and ${CAT_LARGE} repositories with one tag each, one with
  ${CAT_TAGS} tags), served by each registry in turn; ${PAGE_REQUESTS} requests of \`?n=100\` in a
  row for the first page and for a page from the middle (\`last=\`); every page must be full.
$(if [ ${#PEER_NAMES[@]} -gt 0 ]; then printf -- '- Peers (PEER): %s; each joined the local-disk groups in the interleaved order.\n' "$(for p in "${PEER_NAMES[@]}"; do printf '%s (`%s`) ' "$p" "${PEER_CMD[$p]}"; done)"; fi)
- \`push-chunked-concurrent\`: ${CONC_COUNT} uploads of ${CONC_SIZE} at once, each in ${CONC_CHUNK}
  PATCHes (all sessions in flight together); peak RSS in the server-cost table.
- Resume rows: \`berth bench --resume-phase prepare\` PATCHes N bytes (${RESUMES// /, }) in 8 MiB
  chunks and saves the upload URL; the script kills the registry with \`kill -9\` and starts it again
  on the same storage and port; \`--resume-phase finish\` then times the status request, one PATCH of
  the last MiB and the completing PUT, and the verify pass reads the blob back by digest. A
  registry that loses its sessions on restart shows as a failed row (its first error quoted).
- berth on S3: ${S3_NOTE:-berth with \`REGISTRY_STORAGE=s3\` against s3s-fs ${S3S_VERSION} on loopback (a bucket that is a directory on the same disk), ${S3_BLOB_SIZE} blobs.} distribution's S3 driver cannot run against s3s-fs (it needs ListMultipartUploads, which s3s-fs does not implement), so there is no distribution-on-S3 row; the table of other configurations sets berth-s3 beside both registries on the filesystem for information only.
$(if [ -n "$PROFILE" ]; then echo "- Profiles: \`perf record -e cpu-clock -F 499 --call-graph dwarf\` of the berth process, switched on and off around each scenario's timed part through perf's control FIFOs (\`berth bench --perf-ctl\`); the release build already carries line tables (\`debug = 1\`), so no separate build. Folded and drawn with inferno."; fi)
- Total time of this run: ${TOTAL} s, of which ${BUILD_SECONDS} s building$(if [ "$INSTALL_SECONDS" -gt 0 ]; then echo "; ${INSTALL_SECONDS} s of \`cargo install\` (s3s-fs, inferno) came on top and are not counted"; fi).

## Commands

\`\`\`sh
make bench                                   # everything above; BENCH_REPEAT, BENCH_BLOB_SIZE, … in scripts/bench.sh
berth bench --url http://127.0.0.1:5000      # every scenario against one registry
berth bench --url https://registry.example --user me --scenario push-chunked-8m --blob-size 256MiB --json out.jsonl
berth bench --report out.jsonl --markdown report.md --svg chart.svg   # compare labels berth / distribution
\`\`\`

Raw results: [benches/results/results.jsonl](benches/results/results.jsonl) (one JSON object per
scenario run: scenario, registry, seed, bytes, seconds, mb_s, ops, ops_s, p50_ms, p99_ms, errors,
server_cpu_s, server_peak_rss_mib, client_cpu_s).
EOF
  } >"$ROOT/BENCHMARKS.md"
  log "wrote BENCHMARKS.md and benches/results/"
fi

cat "$OUT/report.md"
if [ "$FAILED" != 0 ]; then
  for f in "${FAILURES[@]}"; do log "failed: $f"; done
  die "some scenarios failed (see above; the report was written all the same)"
fi

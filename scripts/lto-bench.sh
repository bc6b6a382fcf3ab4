#!/usr/bin/env bash
# berth as built (target/release) against berth with fat LTO and one codegen unit (target/lto),
# the same client and scenarios, alternating rounds; prints the comparison (lto ÷ plain).
# Run from the repository after `cargo build --release`; builds the LTO binary if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/lto/release/berth ] || CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 cargo build --release --bin berth --target-dir target/lto
CLIENT=target/release/berth
rm -rf target/lto-bench && mkdir -p target/lto-bench
start() { # label binary port
  mkdir -p target/lto-bench/$1
  REGISTRY_HTTP_ADDR=127.0.0.1:$3 REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=target/lto-bench/$1 \
  REGISTRY_LOG_LEVEL=warn REGISTRY_LOG_ACCESSLOG_DISABLED=true REGISTRY_STORAGE_DELETE_ENABLED=true \
    $2 serve > target/lto-bench/$1.log 2>&1 &
  echo $!
}
for round in 1 2 3; do
  for pair in "plain:target/release/berth:5101" "lto:target/lto/release/berth:5102"; do
    IFS=: read label bin port <<<"$pair"
    pid=$(start $label-$round $bin $port)
    sleep 1
    $CLIENT bench --url http://127.0.0.1:$port --label $label --seed $round --no-progress \
      --scenario pull-large --scenario pull-large-nohash --scenario push-chunked-8m --scenario push-small --scenario manifest-get \
      --blob-size 512MiB --small-count 1000 --duration 5 --no-verify --server-pid $pid \
      --json target/lto-bench/results.jsonl > target/lto-bench/$label-$round.out 2>&1
    kill $pid; wait $pid 2>/dev/null || true
    rm -rf target/lto-bench/$label-$round
  done
done
$CLIENT bench --report target/lto-bench/results.jsonl --candidate lto --baseline plain --markdown target/lto-bench/report.md

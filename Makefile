# berth — common tasks. `make test` is what CI runs (through .ci/run).

CARGO ?= cargo
PYTHON ?= python3

.PHONY: run certs test deps lint unit bench bench-micro bench-image image clean

## Run the registry on the default configuration (./config.yml: ./data, 127.0.0.1:5000).
run:
	$(CARGO) run --release -- serve

## A private CA and a server certificate for HTTPS in ./certs (see README.md, "HTTPS"):
## make certs DOMAIN=registry.example.com
DOMAIN ?= localhost
certs:
	$(CARGO) run --release -- certs --domain $(DOMAIN) --out certs

## Install what the tests need, check formatting and lints, run every test: the whole suite on
## the default storage (in memory / local disk), then the integration tests again on S3 (s3s-fs,
## started by the tests; tests/s3.rs runs S3-only checks in the first pass).
test: deps lint image
	$(CARGO) test --benches
	$(CARGO) test --lib --bins --tests --no-fail-fast
	BERTH_TEST_STORAGE=s3 $(CARGO) test --no-fail-fast \
	  --test api_blobs --test api_manifests --test failures --test clients --test durability \
	  --test observability

## The real clients and the reference registry the end-to-end tests drive.
deps:
	@missing=""; \
	for tool in skopeo podman docker-registry unshare curl openssl nginx redis-server redis-cli htpasswd docker-compose ps; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo podman docker-registry util-linux curl openssl nginx-light redis-server redis-tools apache2-utils docker-compose procps >/dev/null; \
	fi
	@$(PYTHON) -c 'import oras.client' 2>/dev/null || $(PYTHON) -m pip install -q oras
	@# The S3 server of the S3 tests (newer versions need a newer Rust); ~4 minutes to build.
	@command -v s3s-fs >/dev/null 2>&1 || [ -x "$$HOME/.cargo/bin/s3s-fs" ] || \
	  $(CARGO) install s3s-fs --version 0.14.1 --features binary --locked
	@# The replicated store of tests/garage_cluster.rs (3 nodes in containers, image made by
	@# scripts/garage-image.sh); only LMDB, C libraries built in. Measured: 51 minutes on 2 cores
	@# shared with two other builds (expect 20-30 alone).
	@command -v garage >/dev/null 2>&1 || [ -x "$$HOME/.cargo/bin/garage" ] || \
	  $(CARGO) install garage --version 2.5.0 --locked --no-default-features --features bundled-libs,lmdb
	@command -v docker >/dev/null 2>&1 || { echo "docker CLI missing: the end-to-end tests need the machine's Docker engine"; exit 1; }

## The container image berth:latest and berth:<version>, built from nothing (nothing is pulled):
## the release binary, the libraries it loads and the image's files under target/image/rootfs/,
## copied into a scratch image by the Dockerfile's `local` stage. `docker build .` builds the same
## image from source on a machine with internet (see the Dockerfile).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
image:
	$(CARGO) build --release --bin berth
	bash scripts/image-rootfs.sh target/release/berth target/image/rootfs
	docker build -q --target local -t berth:latest -t berth:$(VERSION) .
	@docker image ls berth:$(VERSION) --format 'berth:{{.Tag}} {{.Size}}'

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

## Unit and in-process integration tests only (no external tools).
unit:
	$(CARGO) test --lib --test api_blobs --test api_manifests

## Load benchmark: berth against CNCF distribution 2.8.2 (Debian's docker-registry) on this machine,
## with the machine's ceilings (median and spread), 50 concurrent uploads, resume after kill -9,
## berth on S3 (s3s-fs), and both registries on a 3-node Garage cluster in containers; writes
## BENCHMARKS.md and benches/results/ (root for apt-get; a first `cargo install` of s3s-fs and
## Garage adds ~4 and 20-50 minutes). `BENCH_GROUPS=garage make bench` reruns the Garage
## section alone. BENCH_PROFILE=1 adds perf
## flamegraphs of berth. Group `fresh`: pull right after a push, manifest PUTs on 1 and 32
## connections (also beside a writing dd), with fsync on and off (berth-nofsync); group `catalog`:
## /v2/_catalog and tags/list pages over 20k and 100k repositories and 100k tags; group `dropcache`:
## berth with storage.filesystem.dropcache (pushes leave no pages cached; first pulls read the disk).
## Other registries join the local-disk groups with PEER='name=command;…' ({port}, {root},
## {config} filled in), e.g. make bench PEER='angos=/path/to/angos serve --port {port} --root {root}'
## (a `$` in it is written `$$`). Knobs: BENCH_REPEAT, BENCH_GROUPS, BENCH_BLOB_SIZE, … (see
## scripts/bench.sh).
bench:
	CARGO="$(CARGO)" BENCH_PROFILE="$(BENCH_PROFILE)" PEER="$${PEER-}" bash scripts/bench.sh

## Image size (berth against Debian's docker-registry in a scratch image of the same kind) and
## container start-to-first-200 (median of 10); writes its rows into BENCHMARKS.md.
bench-image: image
	bash scripts/image-bench.sh

## Criterion micro-benchmarks.
bench-micro:
	$(CARGO) bench --bench digest --bench manifest --bench auth

clean:
	$(CARGO) clean

# berth's container image, with registry:2's contract: `docker run -d -p 5000:5000
# -v /opt/data:/var/lib/registry berth:latest` serves /etc/docker/registry/config.yml.
#
# Two ways to build it, one image:
# - `make image` (no internet needed): cargo builds the binary here, scripts/image-rootfs.sh puts
#   it with exactly the libraries it loads under target/image/rootfs/, and the `local` stage
#   copies that into an empty image (`docker build --target local`).
# - `docker build .` on a machine with internet: the last stage, built from source in the
#   official Rust image. BuildKit (Docker 23+'s default) builds only the stages it needs; the
#   legacy builder builds every stage before the target, `local` included, so there create its
#   input first: `mkdir -p target/image/rootfs && docker build .`.
#
# `local` comes before the Rust image's stage so that the legacy builder, which stops at the
# target, never tries to pull it here.

# What both variants share, written once.
FROM scratch AS base
# REGISTRY_CONFIGURATION_PATH (distribution's variable): the file `berth serve` and
# `berth healthcheck` read when no argument names one.
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REGISTRY_CONFIGURATION_PATH=/etc/docker/registry/config.yml
VOLUME ["/var/lib/registry"]
EXPOSE 5000
# Probes GET /v2/ on the configured address (TLS when configured): 200 or 401 is healthy. No
# shell or curl in the image, so berth probes itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["berth", "healthcheck"]
ENTRYPOINT ["berth"]
CMD ["serve", "/etc/docker/registry/config.yml"]

FROM base AS local
COPY target/image/rootfs/ /

FROM rust:1.95-bookworm AS build
WORKDIR /src
# config.yml: the built-in default configuration is compiled into the binary.
COPY Cargo.toml Cargo.lock config.yml ./
COPY src/ src/
COPY benches/ benches/
COPY scripts/image-rootfs.sh scripts/
COPY docker/ docker/
RUN cargo build --release --locked --bin berth \
 && scripts/image-rootfs.sh target/release/berth /rootfs

FROM base AS source
COPY --from=build /rootfs/ /

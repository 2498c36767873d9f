# syntax=docker/dockerfile:1
#
# harbor-pilot: a static-ish binary on distroless (glibc, CA certificates, no shell,
# no package manager), running as a non-root UID.
#
#   docker build -t harbor-pilot .

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Manifests first, so dependency downloads are cached while only sources change.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin harbor-pilot \
 && strip target/release/harbor-pilot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/harbor-pilot /usr/local/bin/harbor-pilot
# distroless' "nonroot" user; numeric so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/harbor-pilot"]
CMD ["serve", "--config", "/etc/harbor-pilot/config/config.yaml"]

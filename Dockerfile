# syntax=docker/dockerfile:1
#
# harbor-pilot: a static-ish binary on distroless (glibc, CA certificates, no shell,
# no package manager), running as a non-root UID.
#
#   docker build -t harbor-pilot .

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies in a layer of their own: the manifests, with every source file stubbed,
# build all dependencies; a source change then rebuilds only the two crates.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY core/Cargo.toml ./core/
COPY scripts/docker-stubs ./scripts/
RUN scripts/docker-stubs \
 && cargo build --profile production --locked --bin harbor-pilot \
 && rm -rf src core/src
COPY src ./src
COPY core/src ./core/src
# The stubs' build is newer than the copied sources: make cargo rebuild our crates.
RUN touch src/main.rs src/lib.rs core/src/lib.rs \
 && cargo build --profile production --locked --bin harbor-pilot \
 && strip target/production/harbor-pilot

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/production/harbor-pilot /usr/local/bin/harbor-pilot
# distroless' "nonroot" user; numeric so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/harbor-pilot"]
CMD ["serve", "--config", "/etc/harbor-pilot/config/config.yaml"]

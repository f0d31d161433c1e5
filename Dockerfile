# Tollgate: multi-stage build into a slim, non-root image.
#   docker build -t tollgate .
#   docker run -p 4000:4000 -v tollgate-data:/data -e TOLLGATE_ADMIN_TOKEN=… tollgate
# Tested by tests/docker.sh (the runtime stage, on a locally built binary).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them. Every target
# Cargo.toml declares needs a stub here (cargo reads them all), benches
# included.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches/load && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for bench in meter admission ledger webhooks allocs; do echo 'fn main() {}' > "benches/$bench.rs"; done \
    && echo 'fn main() {}' > benches/load/mock_upstream.rs \
    && cargo build --release --locked --bin tollgate && rm -rf src benches
COPY src ./src
COPY benches ./benches
COPY migrations ./migrations
COPY config ./config
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin tollgate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data tollgate \
    && mkdir -p /data && chown tollgate /data
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
COPY config/tollgate.example.toml /etc/tollgate/tollgate.example.toml
USER tollgate
WORKDIR /data
# A named volume takes the image's ownership (uid 10001); a bind-mounted
# host directory must be writable by uid 10001.
VOLUME /data
ENV TOLLGATE_SERVER__LISTEN=0.0.0.0:4000 \
    TOLLGATE_STORAGE__DATABASE_URL=sqlite:///data/tollgate.db
EXPOSE 4000
ENTRYPOINT ["tollgate"]
CMD ["serve"]

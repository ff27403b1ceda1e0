# Build: docker build -t omnigate .   Run: docker compose up (docker-compose.yml).
FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: a change under src/ does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/omnigate-bench.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin omnigate \
    && rm -rf src
COPY src src
COPY migrations migrations
# touch: the copied sources may be older than the placeholder build above.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin omnigate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The gateway runs as an unprivileged user; it writes only under /var/lib/omnigate (the
# SQLite store, when that is the database, and the local copies of results).
RUN groupadd --system --gid 10001 omnigate \
    && useradd --system --uid 10001 --gid omnigate --home-dir /var/lib/omnigate --shell /usr/sbin/nologin omnigate \
    && mkdir -p /var/lib/omnigate && chown omnigate:omnigate /var/lib/omnigate
COPY --from=build /src/target/release/omnigate /usr/local/bin/omnigate
WORKDIR /var/lib/omnigate
USER 10001:10001
# The port and every other setting: config/docker.env (docs/operations.md, Docker).
ENV OMNIGATE_SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
# No curl in the image: the binary asks itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["omnigate", "healthcheck", "--path", "/readyz"]
ENTRYPOINT ["omnigate"]
CMD ["serve"]

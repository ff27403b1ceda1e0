# Build: docker build -t omnigate .   Run: see docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY config config
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
# The gateway runs as an unprivileged user; it writes only under /var/lib/omnigate (the
# SQLite store, when that is the database).
RUN groupadd --system --gid 10001 omnigate \
    && useradd --system --uid 10001 --gid omnigate --home-dir /var/lib/omnigate --shell /usr/sbin/nologin omnigate \
    && mkdir -p /var/lib/omnigate && chown omnigate:omnigate /var/lib/omnigate
COPY --from=build /src/target/release/omnigate /usr/local/bin/omnigate
WORKDIR /var/lib/omnigate
USER 10001:10001
ENV OMNIGATE_SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["omnigate"]
CMD ["serve"]

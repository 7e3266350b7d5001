# Multi-stage build: compile in the Rust image, run in a slim Debian with a non-root user.
# The runtime image expects DATABASE_URL (an existing PostgreSQL); it does not start one.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock build.rs ./
# The workspace also lists the load test: the image builds only the engine, but cargo loads
# every member's manifest, so the load test's is copied with a stub target.
COPY loadtest/Cargo.toml ./loadtest/
RUN mkdir -p src loadtest/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked --bin ingest-engine
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin ingest-engine

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin engine
WORKDIR /app
COPY --from=build /src/target/release/ingest-engine /usr/local/bin/ingest-engine
COPY config ./config
USER engine
ENV INGEST__HTTP__HOST=0.0.0.0 \
    INGEST__HTTP__PORT=8080 \
    INGEST__LOG__FORMAT=json
EXPOSE 8080
# DATABASE_URL must be set, e.g. postgres://ingest:secret@db:5432/ingest
ENTRYPOINT ["/usr/local/bin/ingest-engine"]
CMD ["serve"]

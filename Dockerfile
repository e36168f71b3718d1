# The kubekms image for users who build with Docker or BuildKit. e2e/scripts/build-image.sh
# builds the same image without Docker (same binaries, entrypoint and user; its
# --check-dockerfile keeps the two in step).
#
#   docker build -t registry.example.com/kubekms:0.1.0 .
#   helm install kubekms charts/kubekms -n kubekms-system --create-namespace \
#     --set image.repository=registry.example.com/kubekms
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Static glibc binaries: the runtime image has no libc, no shell, nothing else.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --locked --release --target x86_64-unknown-linux-gnu \
      --bin kubekms-engine --bin kubekms-operator --bin kubekms-agent --bin kubekms-webhook \
 && cd target/x86_64-unknown-linux-gnu/release && strip kubekms-engine kubekms-operator kubekms-agent kubekms-webhook \
 && mkdir -p /out/tmp && chmod 1777 /out/tmp

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/kubekms-engine /usr/local/bin/kubekms-engine
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/kubekms-operator /usr/local/bin/kubekms-operator
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/kubekms-agent /usr/local/bin/kubekms-agent
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/kubekms-webhook /usr/local/bin/kubekms-webhook
COPY --from=build /out/tmp /tmp
ENV PATH=/usr/local/bin
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kubekms-operator"]

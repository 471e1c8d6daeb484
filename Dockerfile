# syntax=docker/dockerfile:1
# One image, three roles: `operator`, `downloader`, `portal` (plus the `fetch` and `cache` tools).
# The build stage runs image/stage.sh, the same script make test runs without Docker.
# Build: make image (needs a Docker engine).
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY operator/src operator/src
COPY bin bin
COPY image image
RUN sh image/stage.sh /app

FROM node:24-bookworm-slim
# xz and bzip2: the downloader looks for codebrowse.yaml inside .tar.xz and .tar.bz2 packages.
RUN apt-get update && apt-get install -y --no-install-recommends xz-utils bzip2 && rm -rf /var/lib/apt/lists/*
# The node image's own "node" user is 1000; the chart runs as 65532 (any non-root id works: /app is
# read-only for everyone and the roles write only to mounted volumes and /tmp).
COPY --from=build /app /app
ENV NODE_ENV=production
USER 65532:65532
WORKDIR /app
ENTRYPOINT ["/app/bin/codebrowse"]
CMD ["--help"]

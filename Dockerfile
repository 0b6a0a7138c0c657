# syntax=docker/dockerfile:1
# cml-lora-serve as a container image, in two variants (README, "Past one machine"):
#   docker build -t cml-lora-serve:cuda .               CUDA: llama.cpp compiled for your GPUs
#   docker build -t cml-lora-serve:cpu --target cpu .   CPU: node-llama-cpp's prebuilt llama.cpp
# Both run `serve` as user 10001 on 0.0.0.0:8080, models read from /models (a volume) or fetched
# from the Hub into /cache at start, adapters from /project (the studio's data/adapters/...).
# Each build stage runs the README's own steps (npm ci, then npm run build:cuda): no other recipe.

ARG NODE_VERSION=20
# The CUDA runtime the image carries: the node's driver must support it (12.8 needs 570 or newer,
# or 525+ through CUDA's minor-version compatibility). Cloudera's CUDA runtimes carry CUDA 12.
ARG CUDA_VERSION=12.8.1
ARG UBUNTU_VERSION=24.04

FROM docker.io/library/node:${NODE_VERSION}-bookworm-slim AS node

# ---- CPU build: the full Debian image has what node-gyp needs (g++, make, python3, git) ----
FROM docker.io/library/node:${NODE_VERSION}-bookworm AS cpu-build
# node-gyp compiles against this Node's own headers instead of downloading them.
ENV npm_config_nodedir=/usr/local
WORKDIR /app
# What `npm ci` builds the addon from, before the rest, so a change to src/ reuses this layer.
COPY package.json package-lock.json binding.gyp CMakeLists.txt ./
COPY native ./native
COPY scripts ./scripts
RUN npm ci --omit=dev --no-audit --no-fund
RUN sh scripts/image-prune.sh

# ---- CPU runtime ----
FROM node AS cpu
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app app \
 && mkdir -p /models /project /cache \
 && chown 10001:10001 /cache
WORKDIR /app
COPY --from=cpu-build /app/node_modules ./node_modules
COPY --from=cpu-build /app/build/Release ./build/Release
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY scripts/healthcheck.mjs ./scripts/
# The embedded default (8 MB): `docker run` with nothing set serves it, a smoke test of the image.
COPY models/tiny-qa ./models/tiny-qa
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    MODELS_DIR=/models \
    CACHE_DIR=/cache/cml-lora-serve \
    HF_HOME=/cache/huggingface \
    BACKEND=cpu
# Adapter locations are relative to the working directory, the CML project root in the studio.
WORKDIR /project
USER 10001:10001
EXPOSE 8080
# A start may fetch and convert a model (minutes): failures in the first 15 minutes do not count.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 CMD ["node", "/app/scripts/healthcheck.mjs"]
# Exec form: node is PID 1 and gets SIGTERM itself, which drains (DRAIN_TIMEOUT, 25 s).
ENTRYPOINT ["node", "/app/bin/cml-lora-serve.mjs"]
CMD ["serve"]

# ---- CUDA build: llama.cpp compiled with nvcc for CUDA_ARCHITECTURES ----
FROM docker.io/nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS cuda-build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake python3 git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
# Node's headers: node-gyp and cmake-js compile the addon against them instead of downloading them.
COPY --from=node /usr/local/include/node /usr/local/include/node
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
ENV npm_config_nodedir=/usr/local
WORKDIR /app
COPY package.json package-lock.json binding.gyp CMakeLists.txt ./
COPY native ./native
COPY scripts ./scripts
RUN npm ci --omit=dev --no-audit --no-fund
# 80 A100, 86 A10/A40, 89 L4/L40S, 90 H100/H200. Fewer build faster (npm run build:cuda's default: 90).
ARG CUDA_ARCHITECTURES="80;86;89;90"
RUN CMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" CML_TOOLS=OFF npm run build:cuda
RUN sh scripts/image-prune.sh

# ---- CUDA runtime (the default target): the matching runtime image has cudart and cuBLAS ----
FROM docker.io/nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS cuda
# libgomp: ggml's CPU backend, built with OpenMP, is linked to it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app app \
 && mkdir -p /models /project /cache \
 && chown 10001:10001 /cache
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=cuda-build /app/node_modules ./node_modules
COPY --from=cuda-build /app/build/Release ./build/Release
COPY --from=cuda-build /app/build-cuda/Release ./build-cuda/Release
COPY --from=cuda-build /app/build-cuda/bin ./build-cuda/bin
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY scripts/healthcheck.mjs ./scripts/
COPY models/tiny-qa ./models/tiny-qa
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    MODELS_DIR=/models \
    CACHE_DIR=/cache/cml-lora-serve \
    HF_HOME=/cache/huggingface \
    BACKEND=cuda
WORKDIR /project
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 CMD ["node", "/app/scripts/healthcheck.mjs"]
ENTRYPOINT ["node", "/app/bin/cml-lora-serve.mjs"]
CMD ["serve"]

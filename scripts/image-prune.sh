#!/bin/sh
# Run by both of the Dockerfile's build stages after the build (sh scripts/image-prune.sh, from the
# package root): removes what the image never loads, 0.9 GB of node_modules (measured on this
# checkout's install). test/deploy/image.test.ts starts a server from a copy pruned so.
set -eu
nlc=node_modules/@node-llama-cpp
# Other platforms' and other backends' prebuilt llama.cpp. linux-x64 (the CPU build's libraries)
# stays in both images: BACKEND=cpu works in the CUDA image too.
for p in linux-arm64 linux-armv7l linux-x64-vulkan linux-x64-cuda linux-x64-cuda-ext; do
  rm -rf "${nlc:?}/$p"
done
# The addon linked to the prebuilt CUDA libraries just removed: the CUDA image has its own build.
rm -f build/Release/cml_llama_cuda_prebuilt.node
# node-gyp's objects; only the addons are loaded.
find build/Release -mindepth 1 ! -name '*.node' -exec rm -rf {} +
# llama.cpp's sources (unpacked from node-llama-cpp's bundle to compile against): build input only.
# node-llama-cpp's dist/ stays: json_schema requests use its grammar converter.
rm -rf node_modules/node-llama-cpp/llama/llama.cpp node_modules/node-llama-cpp/llama/gitRelease.bundle
echo "image-prune: node_modules $(du -sh node_modules | cut -f1)"

// Merging a LoRA into the base weights before serving: W' = W + scale * alpha/rank * B*A, written as
// a new GGUF with the base's own tensor types. A merged adapter costs nothing per token; applied
// unmerged, llama.cpp's four small kernels per adapted projection took half of a step on the H200
// (1b F16, rank 16 on all projections: 1.16 -> 2.35 ms a step).
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

namespace cml {

struct MergeOptions {
  std::string base;     // GGUF model (one file)
  std::string adapter;  // GGUF LoRA adapter
  std::string out;      // written here (the caller renames it into place)
  float scale = 1.0f;   // the user's scale; alpha/rank is applied on top, as llama.cpp does
  int32_t threads = 1;
};

struct MergeResult {
  int32_t tensors = 0;        // in the output
  int32_t merged = 0;         // of those, changed by the adapter
  int32_t widened = 0;        // merged tensors stored as F16 (their type cannot be re-quantized without an imatrix)
  float effective_scale = 0;  // scale * alpha / rank (of the first pair)
};

struct MergeError : std::runtime_error {
  std::string code;
  MergeError(std::string c, const std::string& m) : std::runtime_error(m), code(std::move(c)) {}
};

// progress(fraction of base bytes done). Throws MergeError with MODEL_INVALID, ADAPTER_LOAD_FAILED
// or MERGE_FAILED (I/O).
MergeResult merge_lora(const MergeOptions& o, const std::function<void(float)>& progress);

}  // namespace cml

#include "merge.h"
#include "error_codes.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "ggml.h"
#include "gguf.h"
#include "worker_pool.h"

namespace cml {

namespace {

struct GgufFree {
  void operator()(gguf_context* c) const { gguf_free(c); }
};
struct GgmlFree {
  void operator()(ggml_context* c) const { ggml_free(c); }
};
struct FileClose {
  void operator()(FILE* f) const { std::fclose(f); }
};
using GgufPtr = std::unique_ptr<gguf_context, GgufFree>;
using GgmlPtr = std::unique_ptr<ggml_context, GgmlFree>;
using FilePtr = std::unique_ptr<FILE, FileClose>;

std::string kv_str(const gguf_context* c, const char* key) {
  const int64_t k = gguf_find_key(c, key);
  return k >= 0 && gguf_get_kv_type(c, k) == GGUF_TYPE_STRING ? gguf_get_val_str(c, k) : "";
}

// Any tensor type ggml can read, as f32.
std::vector<float> to_f32(const ggml_tensor* t, const void* data) {
  const int64_t n = ggml_nelements(t);
  std::vector<float> out(n);
  if (t->type == GGML_TYPE_F32) {
    std::memcpy(out.data(), data, n * sizeof(float));
  } else {
    const auto* traits = ggml_get_type_traits(t->type);
    if (traits->to_float == nullptr)
      throw MergeError(code::ADAPTER_LOAD_FAILED, std::string("cannot read tensor type ") + ggml_type_name(t->type));
    traits->to_float(data, out.data(), n);
  }
  return out;
}

// Types ggml_quantize_chunk writes without an importance matrix (it aborts on any other).
bool requantizable(ggml_type t) {
  switch (t) {
    case GGML_TYPE_F32:
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16:
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q3_K:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K:
    case GGML_TYPE_IQ4_NL:
    case GGML_TYPE_IQ4_XS:
    case GGML_TYPE_TQ1_0:
    case GGML_TYPE_TQ2_0:
    case GGML_TYPE_MXFP4:
      return !ggml_quantize_requires_imatrix(t);
    default:
      return false;
  }
}

struct Pair {
  const ggml_tensor* a = nullptr;  // ne [n_in, rank]
  const ggml_tensor* b = nullptr;  // ne [rank, n_out]
};

}  // namespace

MergeResult merge_lora(const MergeOptions& o, const std::function<void(float)>& progress) {
  ggml_context* meta_raw = nullptr;
  GgufPtr base(gguf_init_from_file(o.base.c_str(), {/*no_alloc=*/true, &meta_raw}));
  GgmlPtr meta(meta_raw);
  if (!base) throw MergeError(code::MODEL_INVALID, o.base + " is not a readable GGUF model");
  ggml_context* lora_raw = nullptr;
  GgufPtr lora(gguf_init_from_file(o.adapter.c_str(), {/*no_alloc=*/false, &lora_raw}));
  GgmlPtr lora_ctx(lora_raw);
  if (!lora) throw MergeError(code::ADAPTER_LOAD_FAILED, o.adapter + " is not a readable GGUF file");
  if (kv_str(lora.get(), "general.type") != "adapter" || kv_str(lora.get(), "adapter.type") != "lora") {
    throw MergeError(code::ADAPTER_LOAD_FAILED, o.adapter + " is not a LoRA adapter (general.type / adapter.type)");
  }
  if (gguf_find_key(lora.get(), "adapter.alora.invocation_tokens") >= 0) {
    throw MergeError(code::ADAPTER_LOAD_FAILED, "activated LoRA (aLoRA) adapters apply per token and cannot be merged");
  }
  const int64_t split_key = gguf_find_key(base.get(), "split.count");
  if (split_key >= 0 && gguf_get_kv_type(base.get(), split_key) == GGUF_TYPE_UINT16 &&
      gguf_get_val_u16(base.get(), split_key) > 1) {
    throw MergeError(code::MODEL_INVALID,
                     "split models (several GGUF files) are not merged; serve the adapter unmerged");
  }
  const std::string arch = kv_str(base.get(), "general.architecture");
  if (kv_str(lora.get(), "general.architecture") != arch) {
    throw MergeError(code::ADAPTER_LOAD_FAILED, "the adapter is for '" + kv_str(lora.get(), "general.architecture") +
                                                    "', the model is '" + arch + "'");
  }
  const int64_t alpha_key = gguf_find_key(lora.get(), "adapter.lora.alpha");
  const float alpha = alpha_key >= 0 && gguf_get_kv_type(lora.get(), alpha_key) == GGUF_TYPE_FLOAT32
                          ? gguf_get_val_f32(lora.get(), alpha_key)
                          : 0.0f;

  // Pair each lora_a / lora_b with its base tensor, checking shapes as llama.cpp does on load.
  std::unordered_map<std::string, Pair> pairs;
  for (int64_t i = 0; i < gguf_get_n_tensors(lora.get()); ++i) {
    const std::string name = gguf_get_tensor_name(lora.get(), i);
    const ggml_tensor* t = ggml_get_tensor(lora_ctx.get(), name.c_str());
    const auto dot = name.rfind('.');
    const std::string suffix = dot == std::string::npos ? "" : name.substr(dot + 1);
    if (suffix != "lora_a" && suffix != "lora_b")
      throw MergeError(code::ADAPTER_LOAD_FAILED, "unexpected adapter tensor " + name);
    (suffix == "lora_a" ? pairs[name.substr(0, dot)].a : pairs[name.substr(0, dot)].b) = t;
  }
  if (pairs.empty()) throw MergeError(code::ADAPTER_LOAD_FAILED, o.adapter + " holds no LoRA tensors");
  MergeResult result;
  for (const auto& [name, p] : pairs) {
    const ggml_tensor* w = ggml_get_tensor(meta.get(), name.c_str());
    if (p.a == nullptr || p.b == nullptr)
      throw MergeError(code::ADAPTER_LOAD_FAILED, name + " lacks its lora_a or lora_b");
    if (w == nullptr) throw MergeError(code::ADAPTER_LOAD_FAILED, "the model has no tensor " + name);
    if (name.rfind("token_embd", 0) == 0)
      throw MergeError(code::ADAPTER_LOAD_FAILED, "embedding adapters are not merged: " + name);
    const bool fits =
        ggml_n_dims(w) == 2 && p.a->ne[0] == w->ne[0] && p.b->ne[1] == w->ne[1] && p.a->ne[1] == p.b->ne[0];
    if (!fits)
      throw MergeError(code::ADAPTER_LOAD_FAILED, "the adapter's shapes for " + name + " do not fit the model");
  }
  const float rank0 = static_cast<float>(pairs.begin()->second.a->ne[1]);
  result.effective_scale = alpha != 0.0f ? o.scale * alpha / rank0 : o.scale;

  // Output: the base's metadata and tensor list; merged tensors keep their type unless ggml can only
  // produce it with an importance matrix (or not at all), in which case they widen to F16.
  GgufPtr out(gguf_init_empty());
  gguf_set_kv(out.get(), base.get());
  // Written with the default alignment: a copied general.alignment would not change how the data
  // is laid out here, only how readers expect it.
  gguf_remove_key(out.get(), "general.alignment");
  gguf_set_val_str(out.get(), "cml.merged.adapter", o.adapter.c_str());
  gguf_set_val_f32(out.get(), "cml.merged.scale", o.scale);
  const int64_t n_tensors = gguf_get_n_tensors(base.get());
  std::vector<ggml_type> out_type(n_tensors);
  size_t total_bytes = 0;
  for (int64_t i = 0; i < n_tensors; ++i) {
    const char* name = gguf_get_tensor_name(base.get(), i);
    const ggml_tensor* w = ggml_get_tensor(meta.get(), name);
    gguf_add_tensor(out.get(), w);
    out_type[i] = w->type;
    if (pairs.count(name) && !requantizable(w->type)) {
      out_type[i] = GGML_TYPE_F16;
      gguf_set_tensor_type(out.get(), name, GGML_TYPE_F16);
      ++result.widened;
    }
    total_bytes += ggml_nbytes(w);
  }

  FilePtr in(std::fopen(o.base.c_str(), "rb"));
  FilePtr dst(std::fopen(o.out.c_str(), "wb"));
  if (!in || !dst) throw MergeError(code::MERGE_FAILED, "cannot open " + std::string(!in ? o.base : o.out));
  const size_t meta_size = gguf_get_meta_size(out.get());
  const size_t align = gguf_get_alignment(out.get());
  std::vector<uint8_t> buf(meta_size, 0);
  auto write = [&](const void* p, size_t n) {
    if (n > 0 && std::fwrite(p, 1, n, dst.get()) != n)
      throw MergeError(code::MERGE_FAILED, "cannot write " + o.out + " (disk full?)");
  };
  write(buf.data(), meta_size);

  WorkerPool pool(std::max(1, o.threads));
  size_t done_bytes = 0;
  for (int64_t i = 0; i < n_tensors; ++i) {
    const char* name = gguf_get_tensor_name(base.get(), i);
    const ggml_tensor* w = ggml_get_tensor(meta.get(), name);
    const size_t nbytes = ggml_nbytes(w);
    buf.resize(nbytes);
    if (std::fseek(in.get(),
                   static_cast<long>(gguf_get_data_offset(base.get()) + gguf_get_tensor_offset(base.get(), i)),
                   SEEK_SET) != 0 ||
        std::fread(buf.data(), 1, nbytes, in.get()) != nbytes) {
      throw MergeError(code::MODEL_INVALID, o.base + " is truncated: cannot read tensor " + std::string(name));
    }
    auto it = pairs.find(name);
    if (it == pairs.end()) {
      write(buf.data(), nbytes);
    } else {
      const int64_t n_in = w->ne[0], n_out = w->ne[1], rank = it->second.a->ne[1];
      const float s = alpha != 0.0f ? o.scale * alpha / static_cast<float>(rank) : o.scale;
      const std::vector<float> a = to_f32(it->second.a, it->second.a->data);  // [rank][n_in]
      const std::vector<float> b = to_f32(it->second.b, it->second.b->data);  // [n_out][rank]
      const auto* in_traits = ggml_get_type_traits(w->type);
      if (w->type != GGML_TYPE_F32 && in_traits->to_float == nullptr) {
        throw MergeError(code::MODEL_INVALID,
                         std::string("cannot read ") + name + " of type " + ggml_type_name(w->type));
      }
      const size_t in_row = ggml_row_size(w->type, n_in), out_row = ggml_row_size(out_type[i], n_in);
      std::vector<float> wf(static_cast<size_t>(n_in) * n_out);
      const size_t out_bytes = out_row * n_out;
      std::vector<uint8_t> q(out_bytes);
      // Per block of rows, on the pool: dequantize, add sum_r s*B[row][r] * A[r][:] (an axpy over
      // contiguous rows), re-quantize. An 8B model's projections are ~7e9 weights: every step of it
      // single-threaded would take minutes.
      constexpr int64_t kRows = 32;
      pool.run(static_cast<int32_t>((n_out + kRows - 1) / kRows), [&](int32_t blk) {
        const int64_t row0 = blk * kRows, rows = std::min(n_out, row0 + kRows) - row0;
        float* wr0 = wf.data() + row0 * n_in;
        if (w->type == GGML_TYPE_F32) {
          std::memcpy(wr0, buf.data() + row0 * in_row, rows * in_row);
        } else {
          in_traits->to_float(buf.data() + row0 * in_row, wr0, rows * n_in);
        }
        for (int64_t row = row0; row < row0 + rows; ++row) {
          float* wr = wf.data() + row * n_in;
          for (int64_t r = 0; r < rank; ++r) {
            const float f = s * b[row * rank + r];
            const float* ar = a.data() + r * n_in;
            for (int64_t c = 0; c < n_in; ++c) wr[c] += f * ar[c];
          }
        }
        ggml_quantize_chunk(out_type[i], wf.data(), q.data(), row0 * n_in, rows, n_in, nullptr);
      });
      write(q.data(), out_bytes);
      ++result.merged;
    }
    const size_t written = out_type[i] == w->type ? nbytes : ggml_row_size(out_type[i], w->ne[0]) * ggml_nrows(w);
    static const uint8_t zeros[64] = {0};
    for (size_t pad = GGML_PAD(written, align) - written; pad > 0;) {
      const size_t n = std::min(pad, sizeof zeros);
      write(zeros, n);
      pad -= n;
    }
    done_bytes += nbytes;
    progress(static_cast<float>(done_bytes) / static_cast<float>(std::max<size_t>(total_bytes, 1)));
  }
  buf.resize(meta_size);
  gguf_get_meta_data(out.get(), buf.data());
  if (std::fseek(dst.get(), 0, SEEK_SET) != 0) throw MergeError(code::MERGE_FAILED, "cannot seek in " + o.out);
  write(buf.data(), meta_size);
  if (std::fflush(dst.get()) != 0) throw MergeError(code::MERGE_FAILED, "cannot write " + o.out + " (disk full?)");
  result.tensors = static_cast<int32_t>(n_tensors);
  return result;
}

}  // namespace cml

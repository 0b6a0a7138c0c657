// The adapter bank's proof at load (bank_check.h): two made-up adapters, decoded mixed in one
// batch, against each decoded alone the way llama.cpp applies a context's adapters.
#include "bank_check.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "adapter_bank.h"
#include "gguf.h"
#include "llama-model.h"  // llama_internal_get_tensor_map: which weights the made-up adapters adapt

namespace cml {

namespace {

std::string meta(const llama_model* model, const char* key) {
  char buf[128];
  return llama_model_meta_val_str(model, key, buf, sizeof buf) < 0 ? std::string() : std::string(buf);
}

// The weights of the first and last layer that build_lora_mm multiplies in every architecture we
// convert (the last layer's later ones see only the rows that give logits).
std::vector<const ggml_tensor*> probe_weights(const llama_model* model) {
  static const char* kinds[] = {"attn_q",      "attn_k",   "attn_v", "attn_qkv",
                                "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  std::vector<int32_t> layers{0};
  if (llama_model_n_layer(model) > 1) layers.push_back(llama_model_n_layer(model) - 1);
  std::vector<const ggml_tensor*> out;
  for (const auto& [name, t] : llama_internal_get_tensor_map(model)) {
    if (ggml_n_dims(t) != 2 || std::find(out.begin(), out.end(), t) != out.end()) continue;
    for (int32_t layer : layers) {
      for (const char* kind : kinds) {
        if (name == "blk." + std::to_string(layer) + "." + kind + ".weight") out.push_back(t);
      }
    }
  }
  return out;
}

// A LoRA GGUF with random A and B for `weights`, written to a temporary file and loaded.
llama_adapter_lora* made_up_adapter(llama_model* model, const std::vector<const ggml_tensor*>& weights, ggml_type type,
                                    int64_t rank, float alpha, uint32_t seed) {
  size_t values = 0;
  for (const auto* w : weights) values += rank * (w->ne[0] + w->ne[1]);
  ggml_init_params p{values * sizeof(float) + ggml_tensor_overhead() * 2 * (weights.size() + 1), nullptr, false};
  ggml_context* c = ggml_init(p);
  gguf_context* g = gguf_init_empty();
  gguf_set_val_str(g, "general.architecture", meta(model, "general.architecture").c_str());
  gguf_set_val_str(g, "general.type", "adapter");
  gguf_set_val_str(g, "adapter.type", "lora");
  gguf_set_val_f32(g, "adapter.lora.alpha", alpha);
  uint32_t x = seed;
  auto uniform = [&x] {  // xorshift32 in [-1, 1)
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return static_cast<float>(x) / 2147483648.0f - 1.0f;
  };
  for (const auto* w : weights) {
    ggml_tensor* a = ggml_new_tensor_2d(c, type, w->ne[0], rank);
    ggml_tensor* b = ggml_new_tensor_2d(c, type, rank, w->ne[1]);
    ggml_format_name(a, "%s.lora_a", w->name);
    ggml_format_name(b, "%s.lora_b", w->name);
    // Big enough to move every logit well past rounding, small enough to stay finite.
    const float sa = 1.0f / std::sqrt(static_cast<float>(w->ne[0])), sb = 0.5f / std::sqrt(static_cast<float>(rank));
    for (auto [t, scale] : {std::pair{a, sa}, std::pair{b, sb}}) {
      for (int64_t i = 0; i < ggml_nelements(t); ++i) {
        const float v = scale * uniform();
        if (type == GGML_TYPE_F16) {
          static_cast<ggml_fp16_t*>(t->data)[i] = ggml_fp32_to_fp16(v);
        } else {
          static_cast<float*>(t->data)[i] = v;
        }
      }
    }
    gguf_add_tensor(g, a);
    gguf_add_tensor(g, b);
  }
  const char* tmp = std::getenv("TMPDIR");
  // A name of its own: engines of one process may load, and check, at the same time.
  static std::atomic<uint64_t> made{0};
  const std::string path = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/cml-bank-check-" +
                           std::to_string(getpid()) + "-" + std::to_string(++made) + ".gguf";
  const bool written = gguf_write_to_file(g, path.c_str(), false);
  gguf_free(g);
  ggml_free(c);
  if (!written) throw std::runtime_error("cannot write " + path);
  llama_adapter_lora* handle = llama_adapter_lora_init(model, path.c_str());
  std::remove(path.c_str());
  if (handle == nullptr) throw std::runtime_error("llama.cpp refused the made-up adapter");
  return handle;
}

}  // namespace

BankCheck check_bank(llama_model* model, llama_context* ctx, BankLayout layout) {
  BankCheck out;
  const int32_t n_seq = static_cast<int32_t>(llama_n_seq_max(ctx));
  if (n_seq < 2) {
    out.reason = "one slot: nothing to mix";
    return out;
  }
  const std::vector<const ggml_tensor*> weights = probe_weights(model);
  if (weights.empty()) {
    out.reason = "no layer weights it knows to adapt";
    return out;
  }
  std::vector<const ggml_tensor*> some;  // the second adapter leaves every other weight alone
  for (size_t i = 0; i < weights.size(); i += 2) some.push_back(weights[i]);

  llama_memory_t mem = llama_get_memory(ctx);
  const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  const std::vector<llama_token> prompt = {n_vocab / 2, n_vocab / 3, n_vocab / 5, n_vocab / 7};
  llama_batch batch = llama_batch_init(static_cast<int32_t>(prompt.size()) * 3, 0, 1);
  auto x = std::make_shared<LoadedAdapter>(), y = std::make_shared<LoadedAdapter>();
  x->name = "bank-check-x";
  y->name = "bank-check-y";
  auto bank = std::make_unique<AdapterBank>(n_seq, 2, layout);
  // Decodes the prompt in each of `seqs` (one batch) and returns each one's last logits.
  auto decode = [&](const std::vector<int32_t>& seqs) {
    batch.n_tokens = 0;
    for (int32_t s : seqs) {
      for (size_t i = 0; i < prompt.size(); ++i) {
        const int32_t k = batch.n_tokens++;
        batch.token[k] = prompt[i];
        batch.pos[k] = static_cast<llama_pos>(i);
        batch.n_seq_id[k] = 1;
        batch.seq_id[k][0] = s;
        batch.logits[k] = i + 1 == prompt.size();
      }
    }
    const int32_t rc = llama_decode(ctx, batch);
    std::vector<std::vector<float>> rows;
    for (size_t j = 0; rc == 0 && j < seqs.size(); ++j) {
      const float* r = llama_get_logits_ith(ctx, static_cast<int32_t>((j + 1) * prompt.size() - 1));
      rows.emplace_back(r, r + n_vocab);
    }
    for (int32_t s : seqs) llama_memory_seq_rm(mem, s, -1, -1);
    if (rc != 0) throw std::runtime_error("llama_decode failed with code " + std::to_string(rc));
    return rows;
  };
  auto alone = [&](llama_adapter_lora* a, float scale) {
    if (a == nullptr) {
      llama_set_adapters_lora(ctx, nullptr, 0, nullptr);
    } else {
      llama_set_adapters_lora(ctx, &a, 1, &scale);
    }
    return decode({0})[0];
  };
  auto diff = [](const std::vector<float>& p, const std::vector<float>& q) {
    float d = 0.0f;
    for (size_t i = 0; i < p.size(); ++i) d = std::max(d, std::fabs(p[i] - q[i]));
    return std::isfinite(d) ? d : INFINITY;
  };
  try {
    // F32, as the stack: F16 ones would hold the stack to llama.cpp's F16 rounding of activations,
    // which moves logits by up to a few percent of an adapter's effect on a random model.
    x->handle = made_up_adapter(model, weights, GGML_TYPE_F32, 8, 0.0f, 0x9e3779b9u);
    y->handle = made_up_adapter(model, some, GGML_TYPE_F32, 4, 8.0f, 0x7f4a7c15u);  // alpha 8 at rank 4: scale x2
    const std::vector<float> base = alone(nullptr, 0.0f), ref_x = alone(x->handle, 0.5f),
                             ref_y = alone(y->handle, 1.0f);

    bank->set_members({x, y});
    llama_adapter_lora* both[] = {x->handle, y->handle};
    float ones[] = {1.0f, 1.0f};  // what the graph sees of scales while the bank is in scope: none
    llama_set_adapters_lora(ctx, both, 2, ones);
    bank->set_sequence(0, {{x, 0.5f}});
    bank->set_sequence(1, {{y, 1.0f}});
    bank->set_active(0b11);
    const bool three = n_seq >= 3;  // and the base model beside them, when there is a third slot
    const uint64_t calls = lora_hook_calls();
    std::vector<std::vector<float>> mixed;
    {
      BankScope scope(bank.get());
      mixed = decode(three ? std::vector<int32_t>{0, 1, 2} : std::vector<int32_t>{0, 1});
    }
    const bool hooked = lora_hook_calls() > calls;
    out.effect = std::min(diff(ref_x, base), diff(ref_y, base));
    out.error = std::max(diff(mixed[0], ref_x), diff(mixed[1], ref_y));
    if (three) out.error = std::max(out.error, diff(mixed[2], base));
    if (bank->take_fault()) {
      out.reason = "the bank could not tell the rows of a layer apart";
    } else if (!hooked) {
      out.reason = "llama.cpp did not call our build_lora_mm (is another copy of libllama loaded?)";
    } else if (!(out.effect > 0.0f) || !std::isfinite(out.effect)) {
      out.reason = "the made-up adapters changed nothing: inconclusive";
    } else if (!(out.error <= 0.02f * out.effect)) {
      out.reason = "mixed rows differ from each adapter alone (" + std::to_string(out.error) +
                   " against an effect of " + std::to_string(out.effect) + ")";
    } else {
      out.ok = true;
    }
  } catch (const std::exception& e) {
    out.ok = false;
    out.reason = e.what();
  }
  llama_set_adapters_lora(ctx, nullptr, 0, nullptr);
  bank.reset();
  if (x->handle != nullptr) llama_adapter_lora_free(x->handle);
  if (y->handle != nullptr) llama_adapter_lora_free(y->handle);
  llama_batch_free(batch);
  return out;
}

}  // namespace cml

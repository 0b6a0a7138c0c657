// The JS-visible Engine: one model, one context, one scheduler thread, an adapter registry.
// Every method that JS calls validates its input and throws an Error with a `code`; nothing here
// may crash the process on bad input.
#pragma once
#include <algorithm>
#include <napi.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "adapters.h"
#include "bank_check.h"
#include "scheduler.h"

namespace cml {

// llama.cpp's CPU threads: one pool, attached to the context for its life (engine.cpp says why),
// and the CPU backend's function that frees it. Empty where that backend offers no pools.
struct DecodeThreads {
  ggml_threadpool_t pool = nullptr;
  void (*free)(ggml_threadpool_t) = nullptr;
};

// How a model was split over GPUs, as its load handed llama.cpp (llama_model_params).
struct LoadedSplit {
  std::string mode;  // none | layer | row
  int32_t main_gpu = 0;
  std::vector<float> tensor_split;  // llama_max_devices() values; empty when none were given
};

struct EngineOptions {
  std::string model_path;
  int32_t gpu_layers = 0;  // < 0 = all
  int32_t threads = 1;
  int32_t threads_batch = 1;
  int32_t context_size = 2048;   // per slot
  int32_t flash_attention = -1;  // llama_flash_attn_type: -1 auto, 0 off, 1 on
  ggml_type kv_type = GGML_TYPE_F16;
  bool check_tensors = true;  // llama.cpp validates every weight at load: NaN/inf weights fail the load
  // A model over several GPUs (llama.cpp's): none (all on main_gpu), layer (layers and KV split), row
  // (each matrix split, tensor parallel where the backend can); tensor_split: each GPU's share.
  llama_split_mode split_mode = LLAMA_SPLIT_MODE_LAYER;
  int32_t main_gpu = 0;
  std::vector<float> tensor_split;  // empty: llama.cpp's default (by free memory)
  SchedulerConfig sched;
};

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Engine(const Napi::CallbackInfo& info);
  ~Engine() override;

 private:
  friend class LoadWorker;
  friend class CloseWorker;

  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Tokenize(const Napi::CallbackInfo& info);
  Napi::Value Detokenize(const Napi::CallbackInfo& info);
  Napi::Value TokenPieces(const Napi::CallbackInfo& info);
  Napi::Value LoadAdapter(const Napi::CallbackInfo& info);
  Napi::Value UnloadAdapter(const Napi::CallbackInfo& info);
  Napi::Value SetAdapterScale(const Napi::CallbackInfo& info);
  Napi::Value Adapters(const Napi::CallbackInfo& info);
  Napi::Value Submit(const Napi::CallbackInfo& info);
  Napi::Value Validate(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  void require_loaded(Napi::Env env) const;
  // Tokens a request may use: the context asked for (already capped at the trained context), never
  // the cells llama.cpp rounds a slot up to (a multiple of 256): past the trained context, or past a
  // sliding window the model file bounds it by, positions are ones the model never saw.
  int32_t context_per_slot() const { return std::min(scheduler_->n_ctx_seq(), opts_.context_size); }
  std::shared_ptr<Request> prepare(Napi::Env env, const Napi::Value& prompt, const Napi::Object& params);
  void deliver(std::vector<Event>&& events);
  void teardown();  // any thread but the scheduler's; idempotent

  EngineOptions opts_;
  llama_model* model_ = nullptr;
  llama_context* ctx_ = nullptr;
  DecodeThreads threads_;  // freed after ctx_
  std::unique_ptr<AdapterRegistry> adapters_;
  std::unique_ptr<Scheduler> scheduler_;
  Napi::ThreadSafeFunction events_;
  bool events_open_ = true;            // false once released (close) or aborted
  std::atomic<int> adapter_loads_{0};  // loads running on worker threads; close waits for them
  bool loading_ = false;
  bool closed_ = false;
  uint64_t next_id_ = 1;
  BankCheck bank_check_;
  LoadedSplit split_;
  int32_t context_requested_ = 0;  // contextSize as asked, before the cap at the trained context
  // The most bytes one token's text covers, for SPM and BPE vocabularies (0: unknown): a prompt
  // longer than that times what fits is refused without tokenizing it on the JS thread.
  int32_t max_piece_bytes_ = 0;
  int64_t in_flight_ = 0;  // JS thread only: keeps the event loop alive while requests run
};

Napi::Error coded_error(Napi::Env env, const std::string& code, const std::string& message);

// llama_tokenize with the buffer grown as needed; throws INVALID_PARAMS when the text cannot be tokenized.
std::vector<llama_token> tokenize_text(Napi::Env env, const llama_vocab* vocab, const std::string& text,
                                       bool add_special, bool parse_special);

}  // namespace cml

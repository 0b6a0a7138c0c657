#include "engine.h"
#include "error_codes.h"

#include <cstdio>
#include <cstring>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <chrono>
#include <thread>

#include "bank_check.h"
#include "js_params.h"
#include "llama_log.h"
#include "text_stream.h"

namespace cml {

Napi::Error coded_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

namespace {

struct LoadFailure {
  std::string code, message;
};

// Cheap checks first, so the common mistakes get a precise message rather than llama.cpp's.
void check_gguf_file(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw LoadFailure{code::MODEL_NOT_FOUND, "model file not found: " + path};
  if (!S_ISREG(st.st_mode)) throw LoadFailure{code::MODEL_INVALID, "not a regular file: " + path};
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw LoadFailure{code::MODEL_NOT_FOUND, "cannot open " + path + ": " + std::strerror(errno)};
  char magic[4] = {0, 0, 0, 0};
  const size_t n = std::fread(magic, 1, 4, f);
  std::fclose(f);
  if (n != 4 || std::memcmp(magic, "GGUF", 4) != 0) {
    throw LoadFailure{code::MODEL_INVALID, "not a GGUF file (no GGUF magic at the start): " + path};
  }
}

// The longest text one token stands for, special tokens included, for vocabularies whose tokens'
// texts concatenate back to the input (SPM, BPE); 0 for others (WPM and UGM normalize it away).
int32_t max_piece_bytes(const llama_vocab* vocab) {
  const auto type = llama_vocab_type(vocab);
  if (type != LLAMA_VOCAB_TYPE_SPM && type != LLAMA_VOCAB_TYPE_BPE) return 0;
  int32_t most = 1;
  char buf[256];
  for (llama_token t = 0; t < llama_vocab_n_tokens(vocab); ++t) {
    const int32_t n = llama_token_to_piece(vocab, t, buf, sizeof buf, 0, /*special=*/true);
    most = std::max(most, n < 0 ? -n : n);
  }
  return most;
}

// Whether the model's layers run on a GPU: gpuLayers asks for it and such a device is there.
bool offloaded(int32_t gpu_layers) {
  if (gpu_layers == 0) return false;
  for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
    if (ggml_backend_dev_type(ggml_backend_dev_get(i)) == GGML_BACKEND_DEVICE_TYPE_GPU) return true;
  }
  return false;
}

// A float from the model's GGUF metadata, or `fallback` when the key is absent or not a number.
float meta_float(const llama_model* model, const std::string& key, float fallback) {
  char buf[64];
  if (llama_model_meta_val_str(model, key.c_str(), buf, sizeof buf) < 0) return fallback;
  char* end = nullptr;
  const float v = std::strtof(buf, &end);
  return end != buf && std::isfinite(v) ? v : fallback;
}

// The split a model was loaded with, as handed to llama.cpp in its llama_model_params (info()
// reports that, not the options meant for it).
LoadedSplit split_of(const llama_model_params& p) {
  LoadedSplit out;
  out.mode = p.split_mode == LLAMA_SPLIT_MODE_NONE ? "none" : p.split_mode == LLAMA_SPLIT_MODE_ROW ? "row" : "layer";
  out.main_gpu = p.main_gpu;
  if (p.tensor_split != nullptr) out.tensor_split.assign(p.tensor_split, p.tensor_split + llama_max_devices());
  return out;
}

std::string meta_string(const llama_model* model, const char* key) {
  char buf[128];
  return llama_model_meta_val_str(model, key, buf, sizeof buf) < 0 ? std::string() : std::string(buf);
}

// Attaches one pool of n CPU threads to ctx for its life. Without one, ggml makes and joins its
// threads for every decode, and a thread made while the other CPUs look busy (V8 compiling, early
// in a process) starts on its maker's CPU: the two then spin against each other at every barrier
// of the graph. On the 2-CPU VM, one stream of the 60m Q8_0 model decoded at 57-268 tok/s in 8 of
// 17 processes (for their first second, or throughout) and at ~720 otherwise; with the pool, in
// none of 17, and about 5% faster (docs/engine.md). Workers wait on a condition between decodes
// (poll 0): that CPU time is the scheduler's and JS's, and polling measured no faster.
DecodeThreads attach_threads(llama_context* ctx, int32_t n) {
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  ggml_backend_reg_t reg = cpu != nullptr ? ggml_backend_dev_backend_reg(cpu) : nullptr;
  if (reg == nullptr) return {};
  using New = ggml_threadpool_t (*)(ggml_threadpool_params*);
  auto make = reinterpret_cast<New>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new"));
  DecodeThreads t;
  t.free =
      reinterpret_cast<void (*)(ggml_threadpool_t)>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free"));
  if (make == nullptr || t.free == nullptr) return {};
  ggml_threadpool_params p = ggml_threadpool_params_default(n);
  p.poll = 0;
  t.pool = make(&p);
  if (t.pool == nullptr) return {};
  llama_attach_threadpool(ctx, t.pool, t.pool);
  return t;
}

}  // namespace

// Loads the model and creates the context off the JS thread, reporting progress through a TSFN.
class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Engine* engine, Napi::Promise::Deferred deferred, Napi::ThreadSafeFunction progress)
      : Napi::AsyncWorker(engine->Env()), engine_(engine), deferred_(deferred), progress_(progress) {}

  void Execute() override {
    try {
      check_gguf_file(engine_->opts_.model_path);
      LogCapture capture;
      auto mp = llama_model_default_params();
      mp.n_gpu_layers = engine_->opts_.gpu_layers;
      mp.check_tensors = engine_->opts_.check_tensors;
      mp.split_mode = engine_->opts_.split_mode;
      mp.main_gpu = engine_->opts_.main_gpu;
      // llama.cpp reads llama_max_devices() values: the ones given, zeros after them.
      std::vector<float> split(llama_max_devices(), 0.0f);
      std::copy(engine_->opts_.tensor_split.begin(), engine_->opts_.tensor_split.end(), split.begin());
      if (!engine_->opts_.tensor_split.empty()) mp.tensor_split = split.data();
      mp.progress_callback = &LoadWorker::on_progress;
      mp.progress_callback_user_data = this;
      model_ = llama_model_load_from_file(engine_->opts_.model_path.c_str(), mp);
      if (model_ == nullptr) {
        const std::string why = capture.text();
        throw LoadFailure{code::MODEL_LOAD_FAILED, "llama.cpp could not load " + engine_->opts_.model_path + ": " +
                                                       (why.empty() ? "no reason given" : why)};
      }
      split_ = split_of(mp);  // now: `split` above dies with this scope
      const auto& o = engine_->opts_;
      // Past its trained context a model's positions are ones it never saw: its output is garbage,
      // so the context per slot stops there (info() reports both numbers).
      const int32_t train = llama_model_n_ctx_train(model_);
      context_size_ = train > 0 ? std::min(o.context_size, train) : o.context_size;
      max_piece_bytes_ = max_piece_bytes(llama_model_get_vocab(model_));
      auto cp = llama_context_default_params();
      cp.n_seq_max = o.sched.n_slots;
      cp.n_ctx = static_cast<uint32_t>(context_size_) * o.sched.n_slots;
      cp.n_batch = std::max(o.sched.n_batch, o.sched.n_slots);
      cp.n_ubatch = cp.n_batch;
      cp.n_threads = o.threads;
      cp.n_threads_batch = o.threads_batch;
      cp.flash_attn_type = static_cast<llama_flash_attn_type>(o.flash_attention);
      cp.type_k = o.kv_type;
      cp.type_v = o.kv_type;
      cp.kv_unified = false;  // each slot owns context_size cells: overflow is per request, predictable
      cp.no_perf = true;
      // llama.cpp's converter writes YaRN's betas from config.json, but llama.cpp reads them only
      // from the context's parameters: passed on here, else a model with other betas runs at 32/1.
      const std::string arch = meta_string(model_, "general.architecture");
      cp.yarn_beta_fast = meta_float(model_, arch + ".rope.scaling.yarn_beta_fast", cp.yarn_beta_fast);
      cp.yarn_beta_slow = meta_float(model_, arch + ".rope.scaling.yarn_beta_slow", cp.yarn_beta_slow);
      ctx_ = llama_init_from_model(model_, cp);
      if (ctx_ == nullptr) {
        const std::string why = capture.text();
        llama_model_free(model_);
        model_ = nullptr;
        throw LoadFailure{code::CONTEXT_FAILED,
                          "llama.cpp could not create a context: " + (why.empty() ? "no reason given" : why)};
      }
      threads_ = attach_threads(ctx_, std::max(o.threads, o.threads_batch));
      if (o.sched.bank_size > 0) {
        bank_check_ = check_bank(model_, ctx_, o.sched.bank_layout);
      } else {
        bank_check_.reason = "off (adapterBank: 0)";
      }
    } catch (const LoadFailure& f) {
      failure_ = f;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    progress_.Release();
    engine_->loading_ = false;
    engine_->Unref();
    if (!failure_.code.empty()) {
      deferred_.Reject(coded_error(env, failure_.code, failure_.message).Value());
      return;
    }
    engine_->model_ = model_;
    engine_->ctx_ = ctx_;
    engine_->threads_ = threads_;
    engine_->context_requested_ = engine_->opts_.context_size;
    engine_->opts_.context_size = context_size_;
    engine_->max_piece_bytes_ = max_piece_bytes_;
    engine_->adapters_ = std::make_unique<AdapterRegistry>(model_);
    // Fillers pay off where a pass over the weights costs far more than a token's row (a GPU);
    // recurrent state cannot take a token back.
    SchedulerConfig& sc = engine_->opts_.sched;
    if (llama_model_is_recurrent(model_) || llama_model_is_hybrid(model_)) {
      sc.fill_gap = 0;
    } else if (sc.fill_gap < 0) {
      sc.fill_gap = offloaded(engine_->opts_.gpu_layers) ? 32 : 2;
    }
    engine_->bank_check_ = bank_check_;
    engine_->split_ = split_;
    std::unique_ptr<AdapterBank> bank;
    if (bank_check_.ok) bank = std::make_unique<AdapterBank>(sc.n_slots, sc.bank_size, sc.bank_layout);
    engine_->scheduler_ = std::make_unique<Scheduler>(
        model_, ctx_, engine_->adapters_.get(), std::move(bank), engine_->opts_.sched,
        [engine = engine_](std::vector<Event>&& events) { engine->deliver(std::move(events)); });
    deferred_.Resolve(env.Undefined());
  }

 private:
  static bool on_progress(float p, void* self) {
    auto* w = static_cast<LoadWorker*>(self);
    if (p - w->last_progress_ >= 0.01f || p >= 1.0f) {
      w->last_progress_ = p;
      w->progress_.NonBlockingCall([p](Napi::Env env, Napi::Function fn) {
        if (!fn.IsEmpty()) fn.Call({Napi::Number::New(env, p)});
      });
    }
    return true;
  }

  Engine* engine_;
  Napi::Promise::Deferred deferred_;
  Napi::ThreadSafeFunction progress_;
  llama_model* model_ = nullptr;
  llama_context* ctx_ = nullptr;
  DecodeThreads threads_;
  LoadFailure failure_;
  BankCheck bank_check_;
  LoadedSplit split_;
  float last_progress_ = -1.0f;
  int32_t context_size_ = 0;
  int32_t max_piece_bytes_ = 0;
};

// Joining the scheduler can wait for a decode step, so closing happens off the JS thread.
class CloseWorker : public Napi::AsyncWorker {
 public:
  CloseWorker(Engine* engine, Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(engine->Env()), engine_(engine), deferred_(deferred) {}
  void Execute() override { engine_->teardown(); }
  void OnOK() override {
    engine_->Unref();
    if (engine_->events_open_) engine_->events_.Release();  // queued events are still delivered
    engine_->events_open_ = false;
    deferred_.Resolve(Env().Undefined());
  }

 private:
  Engine* engine_;
  Napi::Promise::Deferred deferred_;
};

Napi::Function Engine::Define(Napi::Env env) {
  return DefineClass(env, "Engine",
                     {
                         InstanceMethod<&Engine::Load>("load"),
                         InstanceMethod<&Engine::Info>("info"),
                         InstanceMethod<&Engine::Tokenize>("tokenize"),
                         InstanceMethod<&Engine::Detokenize>("detokenize"),
                         InstanceMethod<&Engine::TokenPieces>("tokenPieces"),
                         InstanceMethod<&Engine::LoadAdapter>("loadAdapter"),
                         InstanceMethod<&Engine::UnloadAdapter>("unloadAdapter"),
                         InstanceMethod<&Engine::SetAdapterScale>("setAdapterScale"),
                         InstanceMethod<&Engine::Adapters>("adapters"),
                         InstanceMethod<&Engine::Submit>("submit"),
                         InstanceMethod<&Engine::Validate>("validate"),
                         InstanceMethod<&Engine::Cancel>("cancel"),
                         InstanceMethod<&Engine::Stats>("stats"),
                         InstanceMethod<&Engine::Close>("close"),
                     });
}

// new Engine(options, onEvents): onEvents(events[]) receives every event of one decode step.
Engine::Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {
  Napi::Env env = info.Env();
  install_log_hook();
  if (!info[0].IsObject() || !info[1].IsFunction()) {
    throw coded_error(env, code::INVALID_PARAMS, "new Engine(options, onEvents): options object and callback required");
  }
  opts_ = read_engine_options(env, info[0].As<Napi::Object>());
  events_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "cml-engine-events", 0, 1);
  events_.Unref(env);  // referenced only while requests are in flight
}

Engine::~Engine() {
  teardown();
  if (events_open_) events_.Release();
}

void Engine::teardown() {
  while (adapter_loads_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (scheduler_) scheduler_->stop();
  scheduler_.reset();
  if (ctx_ != nullptr) llama_free(ctx_);
  ctx_ = nullptr;
  if (threads_.pool != nullptr) threads_.free(threads_.pool);
  threads_ = {};
  adapters_.reset();  // frees adapters; needs the model
  if (model_ != nullptr) llama_model_free(model_);
  model_ = nullptr;
}

void Engine::require_loaded(Napi::Env env) const {
  if (closed_) throw coded_error(env, code::ENGINE_CLOSED, "the engine is closed");
  if (model_ == nullptr) throw coded_error(env, code::NOT_LOADED, "the model is not loaded yet (await load())");
}

Napi::Value Engine::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) throw coded_error(env, code::ENGINE_CLOSED, "the engine is closed");
  if (loading_ || model_ != nullptr) throw coded_error(env, code::ALREADY_LOADED, "load() may be called once");
  loading_ = true;
  auto deferred = Napi::Promise::Deferred::New(env);
  Napi::Function cb =
      info[0].IsFunction() ? info[0].As<Napi::Function>() : Napi::Function::New(env, [](const Napi::CallbackInfo&) {});
  auto progress = Napi::ThreadSafeFunction::New(env, cb, "cml-load-progress", 0, 1);
  Ref();  // the worker holds `this` until it settles
  (new LoadWorker(this, deferred, progress))->Queue();
  return deferred.Promise();
}

Napi::Value Engine::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_loaded(env);
  const llama_vocab* vocab = llama_model_get_vocab(model_);
  Napi::Object o = Napi::Object::New(env);
  char buf[256];
  llama_model_desc(model_, buf, sizeof buf);
  o.Set("description", buf);
  if (llama_model_meta_val_str(model_, "general.architecture", buf, sizeof buf) > 0) o.Set("architecture", buf);
  o.Set("parameters", Napi::Number::New(env, static_cast<double>(llama_model_n_params(model_))));
  o.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(llama_model_size(model_))));
  o.Set("trainContext", llama_model_n_ctx_train(model_));
  o.Set("layers", llama_model_n_layer(model_));
  o.Set("vocabSize", llama_vocab_n_tokens(vocab));
  o.Set("bos", llama_vocab_bos(vocab));
  o.Set("eos", llama_vocab_eos(vocab));
  o.Set("addBos", llama_vocab_get_add_bos(vocab));
  // For rendering chat templates: the template, and the BOS/EOS text they refer to as bos_token / eos_token.
  const char* tmpl = llama_model_chat_template(model_, nullptr);
  o.Set("chatTemplate", tmpl != nullptr ? Napi::Value(Napi::String::New(env, tmpl)) : env.Null());
  auto special_text = [&](llama_token t) -> Napi::Value {
    return t < 0 ? env.Null() : Napi::Value(Napi::String::New(env, token_piece(vocab, t, /*special=*/true)));
  };
  o.Set("bosText", special_text(llama_vocab_bos(vocab)));
  o.Set("eosText", special_text(llama_vocab_eos(vocab)));
  o.Set("contextPerSlot", context_per_slot());
  o.Set("contextRequested", context_requested_);
  o.Set("slots", opts_.sched.n_slots);
  o.Set("maxQueue", opts_.sched.max_queue);
  o.Set("threads", opts_.threads);
  o.Set("samplingThreads", opts_.sched.n_threads);
  o.Set("fillGap", opts_.sched.fill_gap);
  o.Set("gpuLayers", opts_.gpu_layers);
  // Over several GPUs: what the load handed llama.cpp in llama_model_params.
  o.Set("splitMode", split_.mode);
  o.Set("mainGpu", split_.main_gpu);
  Napi::Array ts = Napi::Array::New(env, split_.tensor_split.size());
  for (size_t i = 0; i < split_.tensor_split.size(); ++i) ts.Set(static_cast<uint32_t>(i), split_.tensor_split[i]);
  o.Set("tensorSplit", ts);
  // Whether mixed adapter sets share a decode (adapter_bank.h), and the load-time check's numbers.
  Napi::Object bank = Napi::Object::New(env);
  bank.Set("enabled", bank_check_.ok);
  bank.Set("size", bank_check_.ok ? opts_.sched.bank_size : 0);
  const BankLayout l = opts_.sched.bank_layout;
  bank.Set("layout", l == BankLayout::Stacked ? "stacked" : l == BankLayout::Gathered ? "gathered" : "auto");
  bank.Set("reason", bank_check_.ok ? env.Null() : Napi::Value(Napi::String::New(env, bank_check_.reason)));
  bank.Set("checkError", bank_check_.error);
  bank.Set("checkEffect", bank_check_.effect);
  o.Set("adapterBank", bank);
  return o;
}

std::vector<llama_token> tokenize_text(Napi::Env env, const llama_vocab* vocab, const std::string& text,
                                       bool add_special, bool parse_special) {
  if (text.size() > static_cast<size_t>(INT32_MAX / 2))
    throw coded_error(env, code::INVALID_PARAMS, "text is too long to tokenize");
  const int32_t len = static_cast<int32_t>(text.size());
  std::vector<llama_token> ids(text.size() + 8);
  int32_t n =
      llama_tokenize(vocab, text.data(), len, ids.data(), static_cast<int32_t>(ids.size()), add_special, parse_special);
  if (n < 0 && n != INT32_MIN) {
    ids.resize(-n);
    n = llama_tokenize(vocab, text.data(), len, ids.data(), -n, add_special, parse_special);
  }
  if (n < 0) throw coded_error(env, code::INVALID_PARAMS, "text could not be tokenized");
  ids.resize(n);
  return ids;
}

Napi::Value Engine::Tokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_loaded(env);
  if (!info[0].IsString()) throw coded_error(env, code::INVALID_PARAMS, "tokenize(text): text must be a string");
  const bool add_special = read_flag(env, info[1], "tokenize(text, addSpecial): addSpecial", true);
  const bool parse_special = read_flag(env, info[2], "tokenize(text, addSpecial, parseSpecial): parseSpecial", false);
  const auto ids = tokenize_text(env, llama_model_get_vocab(model_), info[0].As<Napi::String>().Utf8Value(),
                                 add_special, parse_special);
  Napi::Array out = Napi::Array::New(env, ids.size());
  for (size_t i = 0; i < ids.size(); ++i) out.Set(static_cast<uint32_t>(i), ids[i]);
  return out;
}

Napi::Value Engine::Detokenize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_loaded(env);
  const llama_vocab* vocab = llama_model_get_vocab(model_);
  const std::vector<llama_token> ids =
      read_token_ids(env, info[0], llama_vocab_n_tokens(vocab), "detokenize(ids): ids");
  const bool special = read_flag(env, info[1], "detokenize(ids, special): special", false);
  std::string text(ids.size() * 8 + 16, '\0');
  int32_t n = llama_detokenize(vocab, ids.data(), static_cast<int32_t>(ids.size()), text.data(),
                               static_cast<int32_t>(text.size()), false, special);
  if (n < 0) {
    text.resize(-n);
    n = llama_detokenize(vocab, ids.data(), static_cast<int32_t>(ids.size()), text.data(), -n, false, special);
  }
  text.resize(std::max(n, 0));
  return Napi::String::New(env, text);
}

// tokenPieces(ids) -> each token's own text, leading space kept and special tokens rendered (what
// OpenAI's logprobs show per token; detokenize() of one token drops SentencePiece's leading space).
Napi::Value Engine::TokenPieces(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_loaded(env);
  const llama_vocab* vocab = llama_model_get_vocab(model_);
  const std::vector<llama_token> ids =
      read_token_ids(env, info[0], llama_vocab_n_tokens(vocab), "tokenPieces(ids): ids");
  Napi::Array out = Napi::Array::New(env, ids.size());
  for (size_t i = 0; i < ids.size(); ++i)
    out.Set(static_cast<uint32_t>(i), token_piece(vocab, ids[i], /*special=*/true));
  return out;
}

Napi::Value Engine::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto deferred = Napi::Promise::Deferred::New(env);
  if (closed_ || loading_) {
    if (loading_) throw coded_error(env, code::LOADING, "close() while the model is loading; await load() first");
    deferred.Resolve(env.Undefined());
    return deferred.Promise();
  }
  closed_ = true;
  Ref();
  (new CloseWorker(this, deferred))->Queue();
  return deferred.Promise();
}

}  // namespace cml

// Engine methods for adapters and generation requests, and the delivery of scheduler events to JS.
#include <cmath>

#include "engine.h"
#include "error_codes.h"
#include "js_params.h"
#include "llama_log.h"

namespace cml {

namespace {

class AdapterWorker : public Napi::AsyncWorker {
 public:
  AdapterWorker(Napi::Env env, AdapterRegistry* registry, std::atomic<int>* running, std::string name, std::string path,
                float scale, Napi::Promise::Deferred deferred)
      : Napi::AsyncWorker(env),
        registry_(registry),
        running_(running),
        name_(std::move(name)),
        path_(std::move(path)),
        scale_(scale),
        deferred_(deferred) {
    running_->fetch_add(1);  // counted from the JS thread, before close() can start
  }

  void Execute() override {
    try {
      // Plain copies only: a reference would outlive the registry if the engine closes meanwhile.
      const auto loaded = registry_->load(name_, path_, scale_);
      alpha_ = loaded->alpha;
    } catch (const std::exception& e) {
      error_ = e.what();
    }
    running_->fetch_sub(1);
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (!error_.empty()) {
      deferred_.Reject(coded_error(env, code::ADAPTER_LOAD_FAILED, error_).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", name_);
    o.Set("path", path_);
    o.Set("alpha", alpha_);
    o.Set("scale", scale_);
    deferred_.Resolve(o);
  }

 private:
  AdapterRegistry* registry_;
  std::atomic<int>* running_;
  std::string name_, path_;
  float scale_;
  Napi::Promise::Deferred deferred_;
  float alpha_ = 0.0f;
  std::string error_;
};

float scale_arg(Napi::Env env, const Napi::Value& v, float fallback) {
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsNumber() || !std::isfinite(v.As<Napi::Number>().DoubleValue())) {
    throw coded_error(env, code::INVALID_PARAMS, "scale must be a finite number");
  }
  return v.As<Napi::Number>().FloatValue();
}

Napi::Object event_to_js(Napi::Env env, const Event& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", Napi::Number::New(env, static_cast<double>(e.id)));
  switch (e.kind) {
    case EventKind::Token:
      o.Set("type", "token");
      o.Set("text", Napi::String::New(env, e.text));
      o.Set("token", e.token);
      if (e.has_logprobs) {
        o.Set("logprob", e.logprobs.chosen);
        Napi::Array top = Napi::Array::New(env, e.logprobs.top.size());
        for (size_t i = 0; i < e.logprobs.top.size(); ++i) {
          Napi::Object t = Napi::Object::New(env);
          t.Set("token", e.logprobs.top[i].token);
          t.Set("logprob", e.logprobs.top[i].logprob);
          top.Set(static_cast<uint32_t>(i), t);
        }
        o.Set("top", top);
      }
      break;
    case EventKind::Done:
      o.Set("type", "done");
      o.Set("text", Napi::String::New(env, e.text));
      o.Set("stopReason", e.stop_reason);
      if (!e.stop_string.empty()) o.Set("stopString", e.stop_string);
      o.Set("promptTokens", e.prompt_tokens);
      o.Set("cachedTokens", e.cached_tokens);
      o.Set("generatedTokens", e.generated_tokens);
      o.Set("prefillMs", e.prefill_ms);
      o.Set("ttftMs", e.ttft_ms);
      o.Set("decodeTokensPerSecond", e.decode_tps);
      o.Set("totalMs", e.total_ms);
      break;
    case EventKind::Error:
      o.Set("type", "error");
      o.Set("code", e.code);
      o.Set("message", e.message);
      break;
  }
  return o;
}

}  // namespace

Napi::Value Engine::LoadAdapter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_loaded(env);
  if (!info[0].IsString() || !info[1].IsString()) {
    throw coded_error(env, code::INVALID_PARAMS, "loadAdapter(name, path, scale?): name and path must be strings");
  }
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.empty()) throw coded_error(env, code::INVALID_PARAMS, "adapter name must not be empty");
  const float scale = scale_arg(env, info[2], 1.0f);
  auto deferred = Napi::Promise::Deferred::New(env);
  (new AdapterWorker(env, adapters_.get(), &adapter_loads_, name, info[1].As<Napi::String>().Utf8Value(), scale,
                     deferred))
      ->Queue();
  return deferred.Promise();
}

Napi::Value Engine::UnloadAdapter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_loaded(env);
  if (!info[0].IsString()) throw coded_error(env, code::INVALID_PARAMS, "unloadAdapter(name): name must be a string");
  return Napi::Boolean::New(env, adapters_->unload(info[0].As<Napi::String>().Utf8Value()));
}

Napi::Value Engine::SetAdapterScale(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_loaded(env);
  if (!info[0].IsString())
    throw coded_error(env, code::INVALID_PARAMS, "setAdapterScale(name, scale): name must be a string");
  const float scale = scale_arg(env, info[1], NAN);
  if (std::isnan(scale)) throw coded_error(env, code::INVALID_PARAMS, "setAdapterScale(name, scale): scale required");
  return Napi::Boolean::New(env, adapters_->set_default_scale(info[0].As<Napi::String>().Utf8Value(), scale));
}

Napi::Value Engine::Adapters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  require_loaded(env);
  auto all = adapters_->list();
  Napi::Array out = Napi::Array::New(env, all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", all[i]->name);
    o.Set("path", all[i]->path);
    o.Set("alpha", all[i]->alpha);
    o.Set("scale", all[i]->default_scale.load());
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// The request a submit() would run, checked: parameters, prompt and context. Throws what submit()
// throws for anything knowable before the request runs.
std::shared_ptr<Request> Engine::prepare(Napi::Env env, const Napi::Value& prompt, const Napi::Object& params) {
  require_loaded(env);
  auto req = std::make_shared<Request>();
  const llama_vocab* vocab = llama_model_get_vocab(model_);
  read_request_params(env, params, *adapters_, llama_vocab_n_tokens(vocab), *req);
  const int32_t n_ctx = context_per_slot();
  auto overflow = [&](const std::string& prompt_size) {
    return coded_error(env, code::CONTEXT_OVERFLOW,
                       "prompt (" + prompt_size + ") + max new tokens (" + std::to_string(req->max_new_tokens) +
                           ") exceeds the context of " + std::to_string(n_ctx) + " tokens per slot");
  };

  if (prompt.IsString()) {
    const std::string text = prompt.As<Napi::String>().Utf8Value();
    // No token covers more than max_piece_bytes_ bytes of text, so this many bytes cannot fit:
    // refused before tokenizing megabytes on the JS thread.
    if (max_piece_bytes_ > 0) {
      const int64_t at_least = (static_cast<int64_t>(text.size()) + max_piece_bytes_ - 1) / max_piece_bytes_;
      if (at_least + req->max_new_tokens > n_ctx) {
        throw overflow(std::to_string(text.size()) + " bytes: at least " + std::to_string(at_least) + " tokens");
      }
    }
    req->prompt = tokenize_text(env, vocab, text, read_flag(env, params.Get("addSpecial"), "addSpecial", true),
                                read_flag(env, params.Get("parseSpecial"), "parseSpecial", true));
  } else if (prompt.IsArray()) {
    req->prompt = read_token_ids(env, prompt, llama_vocab_n_tokens(vocab), "prompt");
  } else {
    throw coded_error(env, code::INVALID_PARAMS, "prompt must be a string or an array of token ids");
  }
  if (req->prompt.empty()) throw coded_error(env, code::INVALID_PARAMS, "prompt is empty (and the model adds no BOS)");
  if (!req->sampling.grammar.empty()) {
    LogCapture capture;
    llama_sampler* g = llama_sampler_init_grammar(vocab, req->sampling.grammar.c_str(), "root");
    if (g == nullptr) {
      const std::string why = capture.text();
      throw coded_error(env, code::INVALID_PARAMS,
                        "grammar does not parse" + (why.empty() ? std::string() : ": " + why));
    }
    req->grammar.reset(g);
  }
  if (static_cast<int64_t>(req->prompt.size()) + req->max_new_tokens > n_ctx) {
    throw overflow(std::to_string(req->prompt.size()) + " tokens");
  }
  return req;
}

// submit(prompt: string | number[], params) -> request id. Errors are thrown here, synchronously,
// for anything knowable before the request runs; later failures arrive as 'error' events.
Napi::Value Engine::Submit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object params = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  auto req = prepare(env, info[0], params);
  req->id = next_id_++;
  req->t_submit_us = now_us();
  const uint64_t id = req->id;
  if (!scheduler_->submit(req)) {
    throw coded_error(env, code::QUEUE_FULL,
                      "all " + std::to_string(opts_.sched.n_slots) + " slots are busy and " +
                          std::to_string(opts_.sched.max_queue) + " requests are queued");
  }
  if (in_flight_++ == 0) events_.Ref(env);
  return Napi::Number::New(env, static_cast<double>(id));
}

// validate(prompt, params): throws what submit() would, runs nothing (start-up checks of a config).
Napi::Value Engine::Validate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object params = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  prepare(env, info[0], params);
  return env.Undefined();
}

Napi::Value Engine::Cancel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_ || !scheduler_) return Napi::Boolean::New(env, false);
  if (!info[0].IsNumber()) throw coded_error(env, code::INVALID_PARAMS, "cancel(id): id must be a number");
  return Napi::Boolean::New(env, scheduler_->cancel(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value())));
}

Napi::Value Engine::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  const bool live = !closed_ && scheduler_;  // after close() the worker thread tears the scheduler down
  o.Set("busySlots", live ? scheduler_->busy() : 0);
  o.Set("queued", live ? scheduler_->queued() : 0);
  o.Set("inFlight", Napi::Number::New(env, static_cast<double>(in_flight_)));
  o.Set("quarantinedSlots", live ? scheduler_->quarantined() : 0);
  if (live) {
    const Scheduler::Profile p = scheduler_->profile();
    Napi::Object prof = Napi::Object::New(env);
    prof.Set("steps", Napi::Number::New(env, static_cast<double>(p.steps)));
    prof.Set("decodeUs", Napi::Number::New(env, static_cast<double>(p.decode_us)));
    prof.Set("sampleUs", Napi::Number::New(env, static_cast<double>(p.sample_us)));
    prof.Set("emitUs", Napi::Number::New(env, static_cast<double>(p.emit_us)));
    prof.Set("loopUs", Napi::Number::New(env, static_cast<double>(p.loop_us)));
    prof.Set("fillerTokens", Napi::Number::New(env, static_cast<double>(p.filler_tokens)));
    prof.Set("adapterSwitches", Napi::Number::New(env, static_cast<double>(p.adapter_switches)));
    prof.Set("switchCostUs", Napi::Number::New(env, static_cast<double>(p.switch_cost_us)));
    prof.Set("nonFinite", Napi::Number::New(env, static_cast<double>(p.non_finite)));
    prof.Set("kvScrubs", Napi::Number::New(env, static_cast<double>(p.kv_scrubs)));
    prof.Set("bankMembers", Napi::Number::New(env, static_cast<double>(p.bank_members)));
    prof.Set("bankBytes", Napi::Number::New(env, static_cast<double>(p.bank_bytes)));
    prof.Set("graphsReused", Napi::Number::New(env, static_cast<double>(p.graphs_reused)));
    o.Set("profile", prof);
  }
  return o;
}

// Scheduler thread: one JS call per decode step, whatever the number of streams.
void Engine::deliver(std::vector<Event>&& events) {
  auto* batch = new std::vector<Event>(std::move(events));
  const napi_status st =
      events_.NonBlockingCall(batch, [this](Napi::Env env, Napi::Function fn, std::vector<Event>* b) {
        std::unique_ptr<std::vector<Event>> owned(b);
        if (env == nullptr) return;
        Napi::Array arr = Napi::Array::New(env, b->size());
        for (size_t i = 0; i < b->size(); ++i) {
          const Event& e = (*b)[i];
          arr.Set(static_cast<uint32_t>(i), event_to_js(env, e));
          if (e.kind != EventKind::Token && --in_flight_ == 0 && events_open_) events_.Unref(env);
        }
        fn.Call({arr});
      });
  if (st != napi_ok) delete batch;
}

}  // namespace cml

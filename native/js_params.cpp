#include "js_params.h"
#include "error_codes.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <utility>

#include "params.h"

namespace cml {
namespace {

[[noreturn]] void bad(Napi::Env env, const std::string& message) {
  throw coded_error(env, code::INVALID_PARAMS, message);
}

bool has(const Napi::Object& o, const char* key) {
  if (!o.Has(key)) return false;
  const Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

double number(Napi::Env env, const Napi::Object& o, const char* key, double fallback) {
  if (!has(o, key)) return fallback;
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) bad(env, std::string(key) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) bad(env, std::string(key) + " must be a finite number");
  return d;
}

int32_t integer(Napi::Env env, const Napi::Object& o, const char* key, int32_t fallback, int64_t lo, int64_t hi) {
  return read_integer(env, o.Get(key), key, fallback, lo, hi);
}

// A request parameter checked against its row of the bounds table (params.cpp).
double bounded(Napi::Env env, const Napi::Object& o, const char* key, double fallback) {
  if (!has(o, key)) return fallback;
  const Napi::Value v = o.Get(key);
  if (!v.IsNumber()) bad(env, std::string(key) + " must be a number");
  return check_param(env, key, v.As<Napi::Number>().DoubleValue());
}

bool boolean(Napi::Env env, const Napi::Object& o, const char* key, bool fallback) {
  return read_flag(env, o.Get(key), key, fallback);
}

}  // namespace

// One of a string option's values (`o[key]` absent: `fallback`); another is refused with the list.
template <typename T>
T choice(Napi::Env env, const Napi::Object& o, const char* key, std::initializer_list<std::pair<const char*, T>> values,
         T fallback) {
  if (!has(o, key)) return fallback;
  const std::string v = o.Get(key).ToString().Utf8Value();
  std::string names;
  size_t i = 0;
  for (const auto& [name, value] : values) {
    if (v == name) return value;
    names += (i == 0 ? "'" : i + 1 == values.size() ? " or '" : ", '") + std::string(name) + "'";
    ++i;
  }
  bad(env, std::string(key) + " must be " + names);
}

int32_t read_integer(Napi::Env env, const Napi::Value& v, const std::string& what, int32_t fallback, int64_t lo,
                     int64_t hi) {
  if (v.IsUndefined() || v.IsNull()) return fallback;
  const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(std::floor(d) == d && d >= static_cast<double>(lo) && d <= static_cast<double>(hi))) {
    bad(env, what + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int32_t>(d);
}

bool read_flag(Napi::Env env, const Napi::Value& v, const std::string& what, bool fallback) {
  if (v.IsUndefined() || v.IsNull()) return fallback;
  if (!v.IsBoolean()) bad(env, what + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::vector<llama_token> read_token_ids(Napi::Env env, const Napi::Value& v, int32_t n_vocab, const std::string& what) {
  if (!v.IsArray()) bad(env, what + " must be an array of token ids");
  const Napi::Array a = v.As<Napi::Array>();
  std::vector<llama_token> ids;
  ids.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); ++i) {
    const Napi::Value e = a.Get(i);
    const double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d < n_vocab) || static_cast<llama_token>(d) != d) {
      char got[32] = "a non-number";
      if (e.IsNumber()) std::snprintf(got, sizeof got, "%.17g", e.As<Napi::Number>().DoubleValue());
      bad(env, what + " must hold integer token ids in [0, " + std::to_string(n_vocab) + "), got " + got + " at [" +
                   std::to_string(i) + "]");
    }
    ids.push_back(static_cast<llama_token>(d));
  }
  return ids;
}

EngineOptions read_engine_options(Napi::Env env, const Napi::Object& o) {
  EngineOptions e;
  if (!o.Get("modelPath").IsString()) bad(env, "modelPath must be a string");
  e.model_path = o.Get("modelPath").As<Napi::String>().Utf8Value();
  constexpr int32_t kMax = std::numeric_limits<int32_t>::max();
  e.gpu_layers = integer(env, o, "gpuLayers", 0, -1, kMax);
  e.threads = integer(env, o, "threads", 1, 1, 1024);
  e.threads_batch = e.threads;  // prompt chunks and single tokens decode on the same threads
  e.sched.n_threads = integer(env, o, "samplingThreads", e.threads, 1, 1024);
  if (has(o, "promptCache")) {
    if (!o.Get("promptCache").IsBoolean()) bad(env, "promptCache must be a boolean");
    e.sched.prompt_cache = o.Get("promptCache").As<Napi::Boolean>().Value();
  }
  e.context_size = integer(env, o, "contextSize", 2048, 16, 1 << 20);
  e.sched.n_slots = integer(env, o, "slots", 4, 1, 256);
  // Batches go down to 1: up to 3 rows keep ggml-cuda's f32 products on its exact fp32 kernel.
  e.sched.n_batch = integer(env, o, "batchSize", 512, 1, 1 << 16);
  e.sched.max_queue = integer(env, o, "maxQueue", 64, 0, 1 << 20);
  e.sched.fill_gap = integer(env, o, "fillGap", -1, -1, 256);  // -1: decided at load
  e.flash_attention = choice(env, o, "flashAttention", {{"auto", -1}, {"on", 1}, {"off", 0}}, e.flash_attention);
  e.check_tensors = boolean(env, o, "checkTensors", true);
  e.split_mode =
      choice(env, o, "splitMode",
             {{"none", LLAMA_SPLIT_MODE_NONE}, {"layer", LLAMA_SPLIT_MODE_LAYER}, {"row", LLAMA_SPLIT_MODE_ROW}},
             e.split_mode);
  e.main_gpu = integer(env, o, "mainGpu", 0, 0, static_cast<int64_t>(llama_max_devices()) - 1);
  if (has(o, "tensorSplit")) {
    const Napi::Value v = o.Get("tensorSplit");
    const size_t most = llama_max_devices();
    if (!v.IsArray()) bad(env, "tensorSplit must be an array of non-negative numbers, one per GPU");
    const Napi::Array a = v.As<Napi::Array>();
    if (a.Length() == 0 || a.Length() > most) {
      bad(env, "tensorSplit must have 1 to " + std::to_string(most) + " entries (one per GPU), got " +
                   std::to_string(a.Length()));
    }
    double sum = 0;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      const Napi::Value x = a.Get(i);
      const double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0) || !std::isfinite(d)) bad(env, "tensorSplit[" + std::to_string(i) + "] must be a number >= 0");
      e.tensor_split.push_back(static_cast<float>(d));
      sum += d;
    }
    if (!(sum > 0)) bad(env, "tensorSplit must give some GPU a share above 0");
  }
  // Adapters whose requests share a decode (adapter_bank.h); 0 takes turns by adapter set.
  e.sched.bank_size = integer(env, o, "adapterBank", 8, 0, 64);
  e.sched.bank_layout =
      choice(env, o, "adapterBankLayout",
             {{"auto", BankLayout::Auto}, {"stacked", BankLayout::Stacked}, {"gathered", BankLayout::Gathered}},
             e.sched.bank_layout);
  e.kv_type = choice(env, o, "kvCacheType", {{"f16", GGML_TYPE_F16}, {"f32", GGML_TYPE_F32}, {"q8_0", GGML_TYPE_Q8_0}},
                     e.kv_type);
  return e;
}

void read_request_params(Napi::Env env, const Napi::Object& o, const AdapterRegistry& registry, int32_t n_vocab,
                         Request& r) {
  SamplingParams& s = r.sampling;
  r.max_new_tokens = static_cast<int32_t>(bounded(env, o, "maxTokens", 256));
  s.greedy = boolean(env, o, "greedy", false);
  s.temperature = static_cast<float>(bounded(env, o, "temperature", 0.8));
  s.top_k = static_cast<int32_t>(bounded(env, o, "topK", 0));
  s.top_p = static_cast<float>(bounded(env, o, "topP", 1.0));
  s.min_p = static_cast<float>(bounded(env, o, "minP", 0.0));
  s.repetition_penalty = static_cast<float>(bounded(env, o, "repetitionPenalty", 1.0));
  s.presence_penalty = static_cast<float>(bounded(env, o, "presencePenalty", 0.0));
  s.frequency_penalty = static_cast<float>(bounded(env, o, "frequencyPenalty", 0.0));
  s.logprobs = static_cast<int32_t>(bounded(env, o, "logprobs", 0));
  r.min_new_tokens = static_cast<int32_t>(bounded(env, o, "minTokens", 0));
  if (boolean(env, o, "ignoreEos", false)) r.min_new_tokens = r.max_new_tokens;
  if (has(o, "seed")) s.seed = static_cast<uint32_t>(bounded(env, o, "seed", 0));
  const std::string why = validate(s);
  if (!why.empty()) bad(env, why);

  if (has(o, "grammar")) {
    const Napi::Value v = o.Get("grammar");
    if (!v.IsString()) bad(env, "grammar must be a string (GBNF)");
    r.sampling.grammar = v.As<Napi::String>().Utf8Value();
  }

  if (has(o, "logitBias")) {
    // {"<token id>": bias}, as OpenAI's logit_bias.
    const Napi::Value v = o.Get("logitBias");
    if (!v.IsObject() || v.IsArray()) bad(env, "logitBias must be an object of token id -> bias");
    const Napi::Object m = v.As<Napi::Object>();
    const Napi::Array keys = m.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      const std::string key = keys.Get(i).ToString().Utf8Value();
      char* end = nullptr;
      const long id = std::strtol(key.c_str(), &end, 10);
      if (key.empty() || *end != '\0' || id < 0 || id >= n_vocab) {
        bad(env, "logitBias key '" + key + "' is not a token id in [0, " + std::to_string(n_vocab) + ")");
      }
      const Napi::Value b = m.Get(keys.Get(i));
      if (!b.IsNumber()) bad(env, "logitBias values must be numbers");
      const double bias =
          check_param(env, "logitBias", b.As<Napi::Number>().DoubleValue(), ("logitBias['" + key + "']").c_str());
      s.logit_bias.push_back({static_cast<llama_token>(id), static_cast<float>(bias)});
    }
  }

  if (has(o, "stop")) {
    const Napi::Value v = o.Get("stop");
    if (!v.IsArray()) bad(env, "stop must be an array of strings");
    const Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      if (!a.Get(i).IsString()) bad(env, "stop must be an array of strings");
      r.stops.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    }
  }

  if (has(o, "adapters")) {
    const Napi::Value v = o.Get("adapters");
    if (!v.IsArray()) bad(env, "adapters must be an array of {name, scale?}");
    const Napi::Array a = v.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); ++i) {
      if (!a.Get(i).IsObject()) bad(env, "adapters must be an array of {name, scale?}");
      const Napi::Object item = a.Get(i).As<Napi::Object>();
      if (!item.Get("name").IsString()) bad(env, "each adapter needs a string name");
      const std::string name = item.Get("name").As<Napi::String>().Utf8Value();
      auto adapter = registry.find(name);
      if (!adapter) throw coded_error(env, code::UNKNOWN_ADAPTER, "no adapter named '" + name + "' is loaded");
      // The effective scale: a merged adapter's difference from its merged scale may reach twice the
      // table's bound (engine.ts checks the requested one against the bound itself).
      const ParamBound* sb = param_bound("adapterScale");
      const float scale = static_cast<float>(number(env, item, "scale", adapter->default_scale.load()));
      if (std::fabs(scale) > 2 * sb->hi) {
        const std::string lim = std::to_string(static_cast<int>(2 * sb->hi));
        bad(env, "adapter '" + name + "' scale must be a number in [-" + lim + ", " + lim + "]");
      }
      if (scale == 0.0f) continue;  // scale 0 is the base model for that adapter
      for (const auto& u : r.adapters) {
        if (u.adapter == adapter) bad(env, "adapter '" + name + "' is named twice");
      }
      r.adapters.push_back({adapter, scale});
    }
    std::sort(r.adapters.begin(), r.adapters.end(),
              [](const AdapterUse& x, const AdapterUse& y) { return x.adapter.get() < y.adapter.get(); });
  }
}

}  // namespace cml

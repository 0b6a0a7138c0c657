#include "params.h"
#include "error_codes.h"

#include <cmath>
#include <cstring>
#include <cstdio>

#include "engine.h"

namespace cml {
namespace {

// Every bound is one a caller can meet and that keeps float32 sampling finite. Penalties and biases
// follow OpenAI's ranges; the adapter scale is where a LoRA stops being a fine-tune (its effective
// value, after a merged adapter's own scale is taken off, may reach twice this: see engine.ts).
constexpr ParamBound kBounds[] = {
    {"maxTokens", 1, 1 << 24, false, false, true, 0},
    {"minTokens", 0, 1 << 24, false, false, true, 0},
    {"temperature", 0, 100, false, false, false, 1e-6},
    {"topK", 0, 1 << 24, false, false, true, 0},
    {"topP", 0, 1, true, false, false, 0},
    {"minP", 0, 1, false, true, false, 0},
    {"repetitionPenalty", 0.001, 1000, false, false, false, 0},
    {"presencePenalty", -2, 2, false, false, false, 0},
    {"frequencyPenalty", -2, 2, false, false, false, 0},
    {"logprobs", 0, 20, false, false, true, 0},
    {"seed", 0, 4294967295.0, false, false, true, 0},
    {"logitBias", -100, 100, false, false, false, 0},
    {"adapterScale", -16, 16, false, false, false, 0},
};

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

std::string rule(const ParamBound& b) {
  // "0 or [1e-06, 100]" where small positive values are refused, else the plain interval.
  const bool gap = b.positive_min > 0;
  const std::string interval = std::string(gap || !b.lo_open ? "[" : "(") + fmt(gap ? b.positive_min : b.lo) + ", " +
                               fmt(b.hi) + (b.hi_open ? ")" : "]");
  return std::string(gap ? "0 or " : "") + (b.integer ? "an integer in " : "a number in ") + interval;
}

}  // namespace

const ParamBound* param_bound(const char* key) {
  for (const auto& b : kBounds) {
    if (std::strcmp(b.key, key) == 0) return &b;
  }
  return nullptr;
}

double check_param(Napi::Env env, const char* key, double v, const char* name) {
  const ParamBound* b = param_bound(key);
  const bool ok = b != nullptr && std::isfinite(v) && (b->lo_open ? v > b->lo : v >= b->lo) &&
                  (b->hi_open ? v < b->hi : v <= b->hi) && (!b->integer || std::floor(v) == v) &&
                  !(v > 0 && v < b->positive_min);
  if (!ok) {
    throw coded_error(env, code::INVALID_PARAMS,
                      std::string(name ? name : key) + " must be " + (b ? rule(*b) : "known") + ", got " + fmt(v));
  }
  return v;
}

Napi::Value ParamBounds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  for (const auto& b : kBounds) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("min", b.lo);
    o.Set("max", b.hi);
    o.Set("minExclusive", b.lo_open);
    o.Set("maxExclusive", b.hi_open);
    o.Set("integer", b.integer);
    o.Set("positiveMin", b.positive_min);
    o.Set("rule", rule(b));
    out.Set(b.key, o);
  }
  return out;
}

}  // namespace cml

// The bounds of every numeric request parameter, in one table: what the native checks enforce and
// what the JS layers read (paramBounds()) to check the same values under their own public names
// (max_new_tokens for maxTokens, ...), so no layer's bounds drift from another's.
#pragma once
#include <napi.h>

#include <string>

namespace cml {

struct ParamBound {
  const char* key;  // the engine's parameter name
  double lo, hi;
  bool lo_open, hi_open;  // (lo, ...] / [..., hi)
  bool integer;
  // Positive values below this are refused (0 stays allowed): temperatures near 0 overflow float32
  // logits (1e-45 is a float32 denormal), while 0 means greedy.
  double positive_min;
};

// nullptr for an unknown key.
const ParamBound* param_bound(const char* key);

// The value checked against its bound; throws INVALID_PARAMS "<name> must be <rule>, got <v>".
// `name` is what the message calls it (the key by default).
double check_param(Napi::Env env, const char* key, double v, const char* name = nullptr);

// {key: {min, max, minExclusive, maxExclusive, integer, positiveMin}} for the JS layers.
Napi::Value ParamBounds(const Napi::CallbackInfo& info);

}  // namespace cml

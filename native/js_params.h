// Reading JS option objects into C++ records, with a clear INVALID_PARAMS error for every wrong type
// or range.
#pragma once
#include <napi.h>

#include "adapters.h"
#include "engine.h"
#include "request.h"

namespace cml {

EngineOptions read_engine_options(Napi::Env env, const Napi::Object& o);

// Fills everything but the prompt and the id. Adapter names are resolved against the registry.
void read_request_params(Napi::Env env, const Napi::Object& o, const AdapterRegistry& registry, int32_t n_vocab,
                         Request& r);

// An array of token ids, each an integer in [0, n_vocab); `what` names it in the error.
std::vector<llama_token> read_token_ids(Napi::Env env, const Napi::Value& v, int32_t n_vocab, const std::string& what);

// A boolean option: `fallback` when absent (undefined or null), an error for any other type (a
// truthy string such as "false" must not read as true).
bool read_flag(Napi::Env env, const Napi::Value& v, const std::string& what, bool fallback);

// An integer option in [lo, hi]: `fallback` when absent, an error for 1.5, "2", NaN or out of range.
int32_t read_integer(Napi::Env env, const Napi::Value& v, const std::string& what, int32_t fallback, int64_t lo,
                     int64_t hi);

}  // namespace cml

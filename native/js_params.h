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

}  // namespace cml

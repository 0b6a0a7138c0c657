// Module entry: the Engine class and the process-wide backend functions.
#include <napi.h>

#include "engine.h"
#include "error_codes.h"
#include "params.h"
#include "ggml-backend.h"
#include "llama.h"
#include "llama_log.h"

namespace cml {
Napi::Value MergeLora(const Napi::CallbackInfo& info);      // merge_worker.cpp
Napi::Value QuantizeModel(const Napi::CallbackInfo& info);  // quantize_worker.cpp
}  // namespace cml

namespace {

const char* device_type(enum ggml_backend_dev_type t) {
  switch (t) {
    case GGML_BACKEND_DEVICE_TYPE_CPU:
      return "cpu";
    case GGML_BACKEND_DEVICE_TYPE_GPU:
      return "gpu";
    case GGML_BACKEND_DEVICE_TYPE_IGPU:
      return "igpu";
    default:
      return "accel";
  }
}

Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t n = ggml_backend_dev_count();
  Napi::Array out = Napi::Array::New(env, n);
  for (size_t i = 0; i < n; ++i) {
    ggml_backend_dev_t d = ggml_backend_dev_get(i);
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(d, &free, &total);
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", ggml_backend_dev_name(d));
    o.Set("description", ggml_backend_dev_description(d));
    o.Set("type", device_type(ggml_backend_dev_type(d)));
    o.Set("memoryFree", Napi::Number::New(env, static_cast<double>(free)));
    o.Set("memoryTotal", Napi::Number::New(env, static_cast<double>(total)));
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// loadBackends(dir): loads every ggml backend library in dir (CPU variants, CUDA when present).
// Returns llama.cpp's warnings, which say why a backend library did not load.
Napi::Value LoadBackends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString())
    throw cml::coded_error(env, cml::code::INVALID_PARAMS, "loadBackends(dir): dir must be a string");
  cml::install_log_hook();
  cml::LogCapture capture;
  ggml_backend_load_all_from_path(info[0].As<Napi::String>().Utf8Value().c_str());
  llama_backend_init();
  return Napi::String::New(env, capture.text());
}

// loadBackend(path): loads one ggml backend library (a CUDA 12 build beside the CUDA 13 one).
// Returns llama.cpp's warnings, empty when it loaded.
Napi::Value LoadBackend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString())
    throw cml::coded_error(env, cml::code::INVALID_PARAMS, "loadBackend(path): path must be a string");
  cml::install_log_hook();
  cml::LogCapture capture;
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  ggml_backend_reg_t reg = ggml_backend_load(path.c_str());
  const std::string why = capture.text();
  return Napi::String::New(env, reg != nullptr ? "" : (why.empty() ? "could not load " + path : why));
}

// errorCodes(): every code the addon reports (native/error_codes.h).
Napi::Value ErrorCodes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
#define CML_ERROR_CODE_JS(name) out.Set(i++, Napi::String::New(env, #name));
  CML_ERROR_CODES(CML_ERROR_CODE_JS)
#undef CML_ERROR_CODE_JS
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", cml::Engine::Define(env));
  exports.Set("devices", Napi::Function::New(env, Devices));
  exports.Set("loadBackends", Napi::Function::New(env, LoadBackends));
  exports.Set("loadBackend", Napi::Function::New(env, LoadBackend));
  exports.Set("mergeLora", Napi::Function::New(env, cml::MergeLora));
  exports.Set("quantizeModel", Napi::Function::New(env, cml::QuantizeModel));
  exports.Set("paramBounds", Napi::Function::New(env, cml::ParamBounds));
  exports.Set("errorCodes", Napi::Function::New(env, ErrorCodes));
#ifndef CML_DYNAMIC_BACKENDS
#define CML_DYNAMIC_BACKENDS 1
#endif
  exports.Set("dynamicBackends", Napi::Boolean::New(env, CML_DYNAMIC_BACKENDS != 0));
  return exports;
}

}  // namespace

NODE_API_MODULE(cml_llama, Init)

// mergeLora(options, onProgress?) -> Promise<{tensors, merged, widened, effectiveScale}>: the merge
// (merge.cpp) on a worker thread, progress reported as it goes.
#include <napi.h>

#include <cmath>

#include "engine.h"
#include "error_codes.h"
#include "js_params.h"
#include "merge.h"
#include "params.h"

namespace cml {

namespace {

class MergeWorker : public Napi::AsyncProgressWorker<float> {
 public:
  MergeWorker(Napi::Env env, MergeOptions o, Napi::Function progress)
      : Napi::AsyncProgressWorker<float>(env, "cml.mergeLora"), opts_(std::move(o)), deferred_(env) {
    if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& p) override {
    float last = -1.0f;
    try {
      result_ = merge_lora(opts_, [&](float f) {
        if (f - last >= 0.01f || f >= 1.0f) {
          last = f;
          p.Send(&f, 1);
        }
      });
    } catch (const MergeError& e) {
      code_ = e.code;
      message_ = e.what();
    } catch (const std::exception& e) {
      code_ = code::MERGE_FAILED;
      message_ = e.what();
    }
  }

  void OnProgress(const float* data, size_t count) override {
    if (count > 0 && !progress_.IsEmpty()) progress_.Call({Napi::Number::New(Env(), data[count - 1])});
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!code_.empty()) {
      deferred_.Reject(coded_error(env, code_, message_).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("tensors", result_.tensors);
    o.Set("merged", result_.merged);
    o.Set("widened", result_.widened);
    o.Set("effectiveScale", result_.effective_scale);
    deferred_.Resolve(o);
  }

 private:
  MergeOptions opts_;
  MergeResult result_;
  std::string code_, message_;
  Napi::Promise::Deferred deferred_;
  Napi::FunctionReference progress_;
};

}  // namespace

Napi::Value MergeLora(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject())
    throw coded_error(env, code::INVALID_PARAMS, "mergeLora(options): options must be an object");
  const Napi::Object o = info[0].As<Napi::Object>();
  MergeOptions m;
  for (const char* key : {"base", "adapter", "out"}) {
    if (!o.Get(key).IsString())
      throw coded_error(env, code::INVALID_PARAMS, std::string("mergeLora: ") + key + " must be a string");
  }
  m.base = o.Get("base").As<Napi::String>().Utf8Value();
  m.adapter = o.Get("adapter").As<Napi::String>().Utf8Value();
  m.out = o.Get("out").As<Napi::String>().Utf8Value();
  // The scale a request could ask for (the bounds table's adapterScale), the threads an engine could use.
  const Napi::Value scale = o.Get("scale");
  if (!scale.IsUndefined()) {
    if (!scale.IsNumber()) throw coded_error(env, code::INVALID_PARAMS, "mergeLora: scale must be a number");
    m.scale = static_cast<float>(
        check_param(env, "adapterScale", scale.As<Napi::Number>().DoubleValue(), "mergeLora: scale"));
  }
  m.threads = read_integer(env, o.Get("threads"), "mergeLora: threads", m.threads, 1, 1024);
  Napi::Function progress = info[1].IsFunction() ? info[1].As<Napi::Function>() : Napi::Function();
  auto* w = new MergeWorker(env, std::move(m), progress);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace cml

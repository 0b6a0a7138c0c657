// quantizeModel({input, output, type, threads}, onProgress?) -> Promise<{type, tensors}>: llama.cpp's
// own quantizer (llama_model_quantize, the code behind llama-quantize) on a worker thread, for the
// K-quants people serve; progress is read from the lines it logs per tensor ("[ 12/ 291] ...").
#include <napi.h>

#include <cstdio>
#include <string>

#include "error_codes.h"
#include "js_params.h"
#include "llama.h"
#include "llama_log.h"

namespace cml {

namespace {

struct QuantType {
  const char* name;
  llama_ftype ftype;
};
constexpr QuantType kTypes[] = {
    {"q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},     {"q8_0", LLAMA_FTYPE_MOSTLY_Q8_0}, {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M}, {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K},
};

struct Progress {
  int32_t done = 0, total = 0;
};

class QuantizeWorker : public Napi::AsyncProgressWorker<Progress> {
 public:
  QuantizeWorker(Napi::Env env, std::string in, std::string out, llama_ftype ftype, int32_t threads,
                 Napi::Function progress)
      : Napi::AsyncProgressWorker<Progress>(env, "cml.quantizeModel"),
        in_(std::move(in)),
        out_(std::move(out)),
        ftype_(ftype),
        threads_(threads),
        deferred_(env) {
    if (!progress.IsEmpty()) progress_ = Napi::Persistent(progress);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute(const ExecutionProgress& p) override {
    LogCapture capture;
    const ExecutionProgress* sink = &p;
    struct Ctx {
      const ExecutionProgress* sink;
      Progress last;
    } ctx{sink, {}};
    LogListener listen(
        [](const char* text, void* user) {
          auto* c = static_cast<Ctx*>(user);
          Progress now;
          if (std::sscanf(text, "[%d/%d]", &now.done, &now.total) == 2 && now.total > 0) {
            c->last = now;
            c->sink->Send(&now, 1);
          }
        },
        &ctx);
    auto qp = llama_model_quantize_default_params();
    qp.nthread = threads_;
    qp.ftype = ftype_;
    if (llama_model_quantize(in_.c_str(), out_.c_str(), &qp) != 0) {
      const std::string why = capture.text();
      failed_ = "llama.cpp could not quantize " + in_ + ": " + (why.empty() ? "no reason given" : why);
    }
    tensors_ = ctx.last.total;
  }

  void OnProgress(const Progress* data, size_t count) override {
    if (count == 0 || progress_.IsEmpty()) return;
    const Progress& last = data[count - 1];
    progress_.Call({Napi::Number::New(Env(), static_cast<double>(last.done) / last.total)});
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!failed_.empty()) {
      deferred_.Reject(coded_error(env, code::MODEL_LOAD_FAILED, failed_).Value());
      return;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("tensors", tensors_);
    deferred_.Resolve(o);
  }

 private:
  std::string in_, out_;
  llama_ftype ftype_;
  int32_t threads_;
  int32_t tensors_ = 0;
  std::string failed_;
  Napi::Promise::Deferred deferred_;
  Napi::FunctionReference progress_;
};

}  // namespace

Napi::Value QuantizeModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto bad = [&](const std::string& m) { return coded_error(env, code::INVALID_PARAMS, "quantizeModel: " + m); };
  if (!info[0].IsObject()) throw bad("options must be an object");
  const Napi::Object o = info[0].As<Napi::Object>();
  for (const char* key : {"input", "output", "type"}) {
    if (!o.Get(key).IsString()) throw bad(std::string(key) + " must be a string");
  }
  const std::string type = o.Get("type").As<Napi::String>().Utf8Value();
  const QuantType* q = nullptr;
  std::string names;
  for (const auto& t : kTypes) {
    if (type == t.name) q = &t;
    names += (names.empty() ? "" : ", ") + std::string(t.name);
  }
  if (q == nullptr) throw bad("type must be one of " + names + ", got '" + type + "'");
  const int32_t threads = read_integer(env, o.Get("threads"), "quantizeModel: threads", 1, 1, 1024);
  Napi::Function progress = info[1].IsFunction() ? info[1].As<Napi::Function>() : Napi::Function();
  auto* w = new QuantizeWorker(env, o.Get("input").As<Napi::String>().Utf8Value(),
                               o.Get("output").As<Napi::String>().Utf8Value(), q->ftype, threads, progress);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace cml

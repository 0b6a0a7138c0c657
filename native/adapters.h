// Registry of LoRA adapters by name. Requests hold shared references, so an adapter unloaded while
// requests use it lives until the last of them ends; the actual free happens on the scheduler
// thread (reap), because the context may still point at the adapter until then.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"

namespace cml {

struct LoadedAdapter {
  // Unique for the process's life: what compares adapter sets once the adapters may be gone (a
  // freed adapter's address can come back for another one; its serial never does).
  const uint64_t serial = next_serial();
  std::string name;
  std::string path;
  llama_adapter_lora* handle = nullptr;
  float alpha = 0.0f;  // from the GGUF (0 = absent: llama.cpp then applies scale as is)
  std::atomic<float> default_scale{1.0f};
  // Unloaded or replaced: the adapter bank lets it go once no request uses it.
  std::atomic<bool> retired{false};
  std::string bank_refusal;  // why it cannot join an adapter bank ("" when it can)

 private:
  static uint64_t next_serial() {
    static std::atomic<uint64_t> n{0};
    return ++n;
  }
};

struct AdapterUse {
  std::shared_ptr<LoadedAdapter> adapter;
  float scale;
};

class AdapterRegistry {
 public:
  explicit AdapterRegistry(llama_model* model) : model_(model) {}
  ~AdapterRegistry();

  // Loads a GGUF LoRA (slow: file I/O). Throws std::runtime_error with llama.cpp's reason.
  std::shared_ptr<LoadedAdapter> load(const std::string& name, const std::string& path, float scale);
  bool unload(const std::string& name);
  bool set_default_scale(const std::string& name, float scale);
  std::shared_ptr<LoadedAdapter> find(const std::string& name) const;
  std::vector<std::shared_ptr<LoadedAdapter>> list() const;

  // Scheduler thread only: frees adapters nobody references any more. The caller must first
  // detach adapters from its context. Returns whether anything was freed.
  bool has_garbage() const;
  void reap();

 private:
  llama_model* model_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<LoadedAdapter>> by_name_;
  std::vector<llama_adapter_lora*> graveyard_;
  std::shared_ptr<std::mutex> model_mu_ = std::make_shared<std::mutex>();  // guards model->loras
};

}  // namespace cml

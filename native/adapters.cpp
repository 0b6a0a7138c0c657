#include "adapters.h"

#include <cstdlib>
#include <stdexcept>

#include "adapter_bank.h"
#include "llama_log.h"

namespace cml {

AdapterRegistry::~AdapterRegistry() {
  decltype(by_name_) all;
  {
    std::lock_guard<std::mutex> lk(mu_);
    all.swap(by_name_);
  }
  all.clear();  // deleters move the handles to the graveyard
  reap();
}

std::shared_ptr<LoadedAdapter> AdapterRegistry::load(const std::string& name, const std::string& path, float scale) {
  llama_adapter_lora* handle = nullptr;
  std::string reason;
  {
    LogCapture capture;
    std::lock_guard<std::mutex> lk(*model_mu_);
    handle = llama_adapter_lora_init(model_, path.c_str());
    reason = capture.text();
  }
  if (handle == nullptr) {
    throw std::runtime_error("cannot load adapter '" + name + "' from " + path + ": " +
                             (reason.empty() ? "llama.cpp gave no reason" : reason));
  }
  // Shared references drop the handle into the graveyard; only the scheduler frees it.
  auto adapter = std::shared_ptr<LoadedAdapter>(new LoadedAdapter(), [this](LoadedAdapter* a) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      graveyard_.push_back(a->handle);
    }
    delete a;
  });
  adapter->name = name;
  adapter->path = path;
  adapter->handle = handle;
  adapter->default_scale = scale;
  adapter->bank_refusal = cml::bank_refusal(handle);
  char buf[64];
  if (llama_adapter_meta_val_str(handle, "adapter.lora.alpha", buf, sizeof buf) > 0)
    adapter->alpha = std::strtof(buf, nullptr);

  std::shared_ptr<LoadedAdapter> replaced;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto& slot = by_name_[name];
    replaced.swap(slot);
    slot = adapter;
  }
  if (replaced) replaced->retired = true;
  return adapter;  // `replaced` releases outside the lock (its deleter takes mu_)
}

bool AdapterRegistry::unload(const std::string& name) {
  std::shared_ptr<LoadedAdapter> gone;  // released after the lock: its deleter takes mu_
  std::lock_guard<std::mutex> lk(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return false;
  gone = std::move(it->second);
  gone->retired = true;
  by_name_.erase(it);
  return true;
}

bool AdapterRegistry::set_default_scale(const std::string& name, float scale) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return false;
  it->second->default_scale = scale;
  return true;
}

std::shared_ptr<LoadedAdapter> AdapterRegistry::find(const std::string& name) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<LoadedAdapter>> AdapterRegistry::list() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<std::shared_ptr<LoadedAdapter>> out;
  for (const auto& [_, a] : by_name_) out.push_back(a);
  return out;
}

bool AdapterRegistry::has_garbage() const {
  std::lock_guard<std::mutex> lk(mu_);
  return !graveyard_.empty();
}

void AdapterRegistry::reap() {
  std::vector<llama_adapter_lora*> dead;
  {
    std::lock_guard<std::mutex> lk(mu_);
    dead.swap(graveyard_);
  }
  std::lock_guard<std::mutex> lk(*model_mu_);
  for (auto* a : dead) llama_adapter_lora_free(a);
}

}  // namespace cml

// What a request asks for and what the scheduler reports back: plain records passed between the
// JS thread and the scheduler thread (see scheduler.h).
#pragma once
#include <atomic>
#include <memory>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "adapters.h"
#include "sampling.h"

namespace cml {

// An adapter set by adapter serial and scale, to compare sets after the adapters may be gone.
using AdapterSetKey = std::vector<std::pair<uint64_t, float>>;

struct Request {
  uint64_t id = 0;
  std::vector<llama_token> prompt;
  SamplingParams sampling;
  int32_t max_new_tokens = 0;
  int32_t min_new_tokens = 0;  // end-of-generation tokens are masked until this many were generated
  std::vector<std::string> stops;
  std::vector<AdapterUse> adapters;  // non-zero scales only, sorted by handle: equal sets compare equal
  std::atomic<bool> cancelled{false};
  int64_t t_submit_us = 0;
  // sampling.grammar, compiled when the request was checked (a grammar that does not parse is the
  // request's INVALID_PARAMS); the scheduler hands it to the slot's sampler.
  std::unique_ptr<llama_sampler, void (*)(llama_sampler*)> grammar{nullptr, llama_sampler_free};

  bool has_adapters(const AdapterSetKey& k) const {
    if (adapters.size() != k.size()) return false;
    for (size_t i = 0; i < k.size(); ++i) {
      if (adapters[i].adapter->serial != k[i].first || adapters[i].scale != k[i].second) return false;
    }
    return true;
  }
  AdapterSetKey adapter_key() const {
    AdapterSetKey k;
    for (const auto& u : adapters) k.emplace_back(u.adapter->serial, u.scale);
    return k;
  }
};

enum class EventKind { Token, Done, Error };

struct Event {
  uint64_t id = 0;
  EventKind kind = EventKind::Token;
  std::string text;  // Token: releasable text (may be empty); Done: text held back until the end
  llama_token token = -1;
  LogprobRow logprobs;
  bool has_logprobs = false;
  // Done
  std::string stop_reason;  // eos | length | stop | cancelled
  std::string stop_string;
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;  // prompt tokens whose KV was reused from the slot's previous request
  int32_t generated_tokens = 0;
  double prefill_ms = 0, ttft_ms = 0, decode_tps = 0, total_ms = 0;
  // Error
  std::string code, message;
};

}  // namespace cml

#include "sampling.h"

#include <algorithm>
#include <cmath>

namespace cml {

Sampler::Sampler(const SamplingParams& p, int32_t n_vocab)
    : n_vocab_(n_vocab),
      repeat_(p.repetition_penalty),
      freq_(p.frequency_penalty),
      present_(p.presence_penalty),
      bias_(p.logit_bias) {
  penalize_ = repeat_ != 1.0f || freq_ != 0.0f || present_ != 0.0f;
  if (penalize_) count_.assign(n_vocab, 0);
  greedy_ = p.greedy || p.temperature <= 0.0f;
  if (greedy_) return;
  // transformers applies temperature, then top-k, then top-p. Top-k picks the same tokens at any
  // temperature, so it goes first: the rest works on k tokens, not the vocabulary.
  top_k_ = p.top_k > 0 && p.top_k < n_vocab ? p.top_k : 0;
  auto sp = llama_sampler_chain_default_params();
  sp.no_perf = true;
  tail_ = llama_sampler_chain_init(sp);
  llama_sampler_chain_add(tail_, llama_sampler_init_temp(p.temperature));
  if (p.top_p < 1.0f) llama_sampler_chain_add(tail_, llama_sampler_init_top_p(p.top_p, 1));
  if (p.min_p > 0.0f) llama_sampler_chain_add(tail_, llama_sampler_init_min_p(p.min_p, 1));
  llama_sampler_chain_add(tail_, llama_sampler_init_dist(p.seed));
}

Sampler::~Sampler() {
  if (tail_ != nullptr) llama_sampler_free(tail_);
}

void Sampler::accept(llama_token t) {
  if (penalize_ && t >= 0 && t < n_vocab_ && count_[t]++ == 0) seen_.push_back(t);
}

void Sampler::accept_prompt(const std::vector<llama_token>& prompt) {
  for (llama_token t : prompt) accept(t);
}

const float* Sampler::adjusted(const float* logits) {
  if (bias_.empty() && seen_.empty()) return logits;
  work_.assign(logits, logits + n_vocab_);
  for (const auto& b : bias_) work_[b.token] += b.bias;
  // Hugging Face's repetition penalty (divide positive logits, multiply negative ones), then
  // OpenAI's frequency and presence penalties, as llama.cpp's penalties sampler applies them.
  for (llama_token t : seen_) {
    float& v = work_[t];
    v = v <= 0 ? v * repeat_ : v / repeat_;
    v -= static_cast<float>(count_[t]) * freq_ + present_;
  }
  return work_.data();
}

namespace {
// The order of candidates: higher logit first, lower id on ties.
inline bool better(float va, llama_token a, float vb, llama_token b) { return va > vb || (va == vb && a < b); }
}  // namespace

llama_token Sampler::pick_top_k(const float* row) {
  // A min-heap of the best k so far; most entries lose to its root at the first comparison.
  cand_.clear();
  auto worse_first = [](const llama_token_data& a, const llama_token_data& b) {
    return better(a.logit, a.id, b.logit, b.id);
  };
  for (llama_token t = 0; t < n_vocab_; ++t) {
    const float v = row[t];
    if (static_cast<int32_t>(cand_.size()) < top_k_) {
      cand_.push_back({t, v, 0.0f});
      std::push_heap(cand_.begin(), cand_.end(), worse_first);
    } else if (better(v, t, cand_.front().logit, cand_.front().id)) {
      std::pop_heap(cand_.begin(), cand_.end(), worse_first);
      cand_.back() = {t, v, 0.0f};
      std::push_heap(cand_.begin(), cand_.end(), worse_first);
    }
  }
  std::sort_heap(cand_.begin(), cand_.end(), worse_first);  // best first
  llama_token_data_array arr{cand_.data(), cand_.size(), -1, /*sorted=*/true};
  llama_sampler_apply(tail_, &arr);
  return arr.data[arr.selected].id;
}

llama_token Sampler::sample(const float* logits) {
  const float* row = adjusted(logits);
  llama_token t;
  if (greedy_) {
    t = argmax(row, n_vocab_);
  } else if (top_k_ > 0) {
    t = pick_top_k(row);
  } else {
    cand_.resize(n_vocab_);
    for (llama_token i = 0; i < n_vocab_; ++i) cand_[i] = {i, row[i], 0.0f};
    llama_token_data_array arr{cand_.data(), cand_.size(), -1, false};
    llama_sampler_apply(tail_, &arr);
    t = arr.data[arr.selected].id;
  }
  accept(t);
  return t;
}

int32_t argmax(const float* x, int32_t n) {
  // The maximum first, in eight independent lanes the compiler can keep in registers; then its
  // first position. Two plain passes beat one pass that tracks an index in a dependency chain.
  float lane[8];
  int32_t i = 0;
  const float lowest = -INFINITY;
  for (float& l : lane) l = lowest;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
  }
  float m = lowest;
  for (float l : lane) m = l > m ? l : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  for (int32_t k = 0; k < n; ++k) {
    if (x[k] == m) return k;
  }
  return 0;  // every value NaN: no better answer exists
}

LogprobRow logprob_row(const float* logits, int32_t n_vocab, int32_t n) {
  float max_logit = -INFINITY;
  for (int32_t i = 0; i < n_vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0.0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  const float log_z = max_logit + static_cast<float>(std::log(sum));

  std::vector<int32_t> ids(n_vocab);
  for (int32_t i = 0; i < n_vocab; ++i) ids[i] = i;
  n = std::min(n, n_vocab);
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  LogprobRow row{log_z, 0.0f, {}};
  row.top.reserve(n);
  for (int32_t i = 0; i < n; ++i) row.top.push_back({ids[i], logits[ids[i]] - log_z});
  return row;
}

std::string validate(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0) return "temperature must be a finite number >= 0";
  if (p.top_k < 0) return "top_k must be >= 0 (0 = off)";
  if (!std::isfinite(p.top_p) || p.top_p <= 0 || p.top_p > 1) return "top_p must be in (0, 1]";
  if (!std::isfinite(p.min_p) || p.min_p < 0 || p.min_p >= 1) return "min_p must be in [0, 1)";
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0)
    return "repetition_penalty must be a finite number > 0";
  if (!std::isfinite(p.presence_penalty)) return "presence_penalty must be finite";
  if (!std::isfinite(p.frequency_penalty)) return "frequency_penalty must be finite";
  if (p.logprobs < 0 || p.logprobs > 20) return "logprobs must be between 0 and 20";
  return {};
}

}  // namespace cml

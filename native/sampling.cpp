#include "sampling.h"

#include <algorithm>
#include <cmath>

namespace cml {

Sampler::Sampler(const SamplingParams& p, int32_t n_vocab, int32_t penalty_window) {
  auto sp = llama_sampler_chain_default_params();
  sp.no_perf = true;
  chain_ = llama_sampler_chain_init(sp);
  if (!p.logit_bias.empty()) {
    llama_sampler_chain_add(chain_, llama_sampler_init_logit_bias(n_vocab, static_cast<int32_t>(p.logit_bias.size()),
                                                                  p.logit_bias.data()));
  }
  const bool penalize = p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  if (penalize) {
    penalties_ = llama_sampler_init_penalties(n_vocab, penalty_window, p.repetition_penalty,
                                              p.frequency_penalty, p.presence_penalty);
    llama_sampler_chain_add(chain_, penalties_);
  }
  n_vocab_ = n_vocab;
  if (p.greedy || p.temperature <= 0.0f) {
    argmax_ = !penalize && p.logit_bias.empty();
    llama_sampler_chain_add(chain_, llama_sampler_init_greedy());
    return;
  }
  // transformers applies temperature, then top-k, then top-p. Top-k picks the same tokens at any
  // temperature, so it goes first here: the rest of the chain then works on k tokens, not the vocabulary.
  if (p.top_k > 0) llama_sampler_chain_add(chain_, llama_sampler_init_top_k(p.top_k));
  llama_sampler_chain_add(chain_, llama_sampler_init_temp(p.temperature));
  if (p.top_p < 1.0f) llama_sampler_chain_add(chain_, llama_sampler_init_top_p(p.top_p, 1));
  if (p.min_p > 0.0f) llama_sampler_chain_add(chain_, llama_sampler_init_min_p(p.min_p, 1));
  llama_sampler_chain_add(chain_, llama_sampler_init_dist(p.seed));
}

Sampler::~Sampler() { llama_sampler_free(chain_); }

void Sampler::accept_prompt(const std::vector<llama_token>& prompt) {
  if (penalties_ == nullptr) return;
  for (llama_token t : prompt) llama_sampler_accept(penalties_, t);
}

llama_token Sampler::sample(llama_context* ctx, int32_t idx) {
  if (!argmax_) return llama_sampler_sample(chain_, ctx, idx);
  const float* logits = llama_get_logits_ith(ctx, idx);
  llama_token best = 0;  // the first maximum, as llama_sampler_init_greedy picks
  for (llama_token t = 1; t < n_vocab_; ++t) {
    if (logits[t] > logits[best]) best = t;
  }
  return best;
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

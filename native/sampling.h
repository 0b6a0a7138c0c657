// Per-request sampling: a llama_sampler chain in Hugging Face's order (repetition penalty, then
// temperature, top-k, top-p, min-p, then the draw), plus optional top-n log-probabilities.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace cml {

struct SamplingParams {
  bool greedy = false;
  float temperature = 0.8f;
  int32_t top_k = 0;  // 0 = off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;  // HF semantics, over prompt and generated tokens
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint32_t seed = LLAMA_DEFAULT_SEED;
  int32_t logprobs = 0;  // top-n log-probabilities per generated token, 0 = none
  bool ignore_eos = false;
  std::vector<llama_logit_bias> logit_bias;  // added to the raw logits before anything else  // mask end-of-generation tokens: fixed-length runs (benchmarks)
};

struct TokenLogprob {
  llama_token token;
  float logprob;
};

class Sampler {
 public:
  // penalty_window: how many past tokens the penalties see (the slot's context size).
  Sampler(const SamplingParams& p, int32_t n_vocab, int32_t penalty_window);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Prompt tokens count for the repetition penalty, as in transformers.
  void accept_prompt(const std::vector<llama_token>& prompt);
  // Samples from output row idx of the last decode and records the token for the penalties.
  llama_token sample(llama_context* ctx, int32_t idx);

 private:
  llama_sampler* chain_ = nullptr;
  llama_sampler* penalties_ = nullptr;  // owned by chain_, fed the prompt directly
  // Plain greedy (no penalties, no bias) is an argmax over the row: no candidate array per token.
  bool argmax_ = false;
  int32_t n_vocab_ = 0;
};

struct LogprobRow {
  float log_z = 0.0f;              // log of the softmax denominator
  float chosen = 0.0f;             // log-probability of the sampled token
  std::vector<TokenLogprob> top;   // the n most likely tokens, highest first
};

// log-softmax of a raw (unpenalized, untempered) logits row: the model's own distribution.
// `chosen` is filled in by the caller once the token is sampled: logits[token] - log_z.
LogprobRow logprob_row(const float* logits, int32_t n_vocab, int32_t n);

// Returns an empty string when p is valid, else what is wrong with it.
std::string validate(const SamplingParams& p);

}  // namespace cml

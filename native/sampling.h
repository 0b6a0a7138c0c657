// Per-request sampling in Hugging Face's order (logit bias, repetition penalty, then top-k,
// temperature, top-p, min-p, then the draw), plus optional top-n log-probabilities.
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
  int32_t logprobs = 0;                      // top-n log-probabilities per generated token, 0 = none
  std::vector<llama_logit_bias> logit_bias;  // added to the raw logits before anything else
  std::string grammar;                       // GBNF (root rule: root); empty = none
};

struct TokenLogprob {
  llama_token token;
  float logprob;
};

// Sampling works on one logits row that the caller owns, so the samplers of one decode step can run
// on several threads at once. Penalties and logit bias touch only the tokens they name (a sparse
// pass that is undone afterwards), and top-k is two streaming passes over the vocabulary: llama.cpp's
// chain would build and scan a candidate per vocabulary entry for each of them, which at 32 slots
// and a 32k-128k vocabulary costs more CPU per step than the GPU spends decoding.
class Sampler {
 public:
  Sampler(const SamplingParams& p, int32_t n_vocab);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Prompt tokens count for the repetition penalty, as in transformers.
  void accept_prompt(const std::vector<llama_token>& prompt);
  // Picks the next token from a raw logits row and records it for the penalties. The row is
  // adjusted in place where bias and penalties apply, and restored before this returns.
  // Returns -1, recording nothing, when the row holds a NaN or +inf: no token can be drawn from it.
  // With a grammar, the token drawn is one it allows (see set_grammar).
  llama_token sample(float* logits);

  // Constrains every later draw to what a llama.cpp grammar sampler allows, and takes ownership of
  // it. The draw is made as usual and checked against the grammar alone; only a rejected token
  // costs a pass of the grammar over the whole vocabulary and a second draw (llama.cpp's own trick).
  void set_grammar(llama_sampler* grammar, const llama_vocab* vocab);

 private:
  void adjust(float* row);
  void restore(float* row);
  llama_token pick_top_k(const float* row, bool& bad);
  llama_token draw(float* row);
  bool grammar_allows(llama_token t);
  void accept(llama_token t);

  int32_t n_vocab_;
  llama_sampler* grammar_ = nullptr;
  const llama_vocab* vocab_ = nullptr;
  int32_t top_k_ = 0;  // 0: the whole vocabulary goes to the tail
  bool greedy_ = false;
  bool penalize_ = false;
  float repeat_ = 1.0f, freq_ = 0.0f, present_ = 0.0f;
  std::vector<llama_logit_bias> bias_;
  // Penalty state: a count per vocabulary entry and the list of entries seen. Every token a slot
  // sees fits its context, which is also the penalty window, so nothing ever leaves the window.
  std::vector<int32_t> count_;
  std::vector<llama_token> seen_;
  std::vector<std::pair<llama_token, float>> saved_;  // raw values of the entries adjust() changed
  std::vector<llama_token_data> cand_;
  std::vector<float> block_max_;
  llama_sampler* tail_ = nullptr;  // temperature, top-p, min-p, draw: on the k candidates
};

// The largest value of a row (NaN never wins). With `bad`, also whether the row holds a NaN or
// +inf (set, never cleared): a model whose numbers overflowed. A -inf is a masked token, not bad.
float row_max(const float* x, int32_t n, bool* bad = nullptr);
// Index of the largest value, the first one on ties (as llama_sampler_init_greedy picks).
int32_t argmax(const float* x, int32_t n, bool* bad = nullptr);

struct LogprobRow {
  float log_z = 0.0f;             // log of the softmax denominator
  float chosen = 0.0f;            // log-probability of the sampled token
  std::vector<TokenLogprob> top;  // the n most likely tokens, highest first
};

// log-softmax of a raw (unpenalized, untempered) logits row: the model's own distribution.
// `chosen` is filled in by the caller once the token is sampled: logits[token] - log_z.
LogprobRow logprob_row(const float* logits, int32_t n_vocab, int32_t n);

// Returns an empty string when p is valid, else what is wrong with it.
std::string validate(const SamplingParams& p);

}  // namespace cml

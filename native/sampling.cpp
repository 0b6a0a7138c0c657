#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <functional>
#if defined(__SSE__)
#include <immintrin.h>
#endif

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
  if (grammar_ != nullptr) llama_sampler_free(grammar_);
}

void Sampler::set_grammar(llama_sampler* grammar, const llama_vocab* vocab) {
  if (grammar_ != nullptr) llama_sampler_free(grammar_);
  grammar_ = grammar;
  vocab_ = vocab;
}

bool Sampler::grammar_allows(llama_token t) {
  llama_token_data one{t, 0.0f, 0.0f};
  llama_token_data_array arr{&one, 1, -1, false};
  llama_sampler_apply(grammar_, &arr);
  return one.logit != -INFINITY;
}

void Sampler::accept(llama_token t) {
  if (penalize_ && t >= 0 && t < n_vocab_ && count_[t]++ == 0) seen_.push_back(t);
}

void Sampler::accept_prompt(const std::vector<llama_token>& prompt) {
  for (llama_token t : prompt) accept(t);
}

void Sampler::adjust(float* row) {
  saved_.clear();
  for (const auto& b : bias_) {
    saved_.emplace_back(b.token, row[b.token]);
    row[b.token] += b.bias;
  }
  // Hugging Face's repetition penalty (divide positive logits, multiply negative ones), then
  // OpenAI's frequency and presence penalties, as llama.cpp's penalties sampler applies them.
  for (llama_token t : seen_) {
    float& v = row[t];
    saved_.emplace_back(t, v);
    v = v <= 0 ? v * repeat_ : v / repeat_;
    v -= static_cast<float>(count_[t]) * freq_ + present_;
  }
}

void Sampler::restore(float* row) {
  // Backwards, so a token both biased and penalized gets its first saved (raw) value last.
  for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) row[it->first] = it->second;
}

namespace {
// The order of candidates: higher logit first, lower id on ties.
inline bool better(float va, llama_token a, float vb, llama_token b) { return va > vb || (va == vb && a < b); }
}  // namespace

llama_token Sampler::pick_top_k(const float* row, bool& bad) {
  // Two streaming passes instead of a heap fed the whole vocabulary. The k-th largest of the
  // maxima of 64-entry blocks is a floor for the k-th largest entry (those k maxima are entries),
  // so every top-k entry is at or above it; the few entries there are then sorted.
  constexpr int32_t kBlock = 64;
  const int32_t n_blocks = (n_vocab_ + kBlock - 1) / kBlock;
  float floor = -INFINITY;
  if (n_blocks < top_k_) row_max(row, n_vocab_, &bad);  // the pass below takes every entry: check them here
  if (bad) return -1;
  if (n_blocks >= top_k_) {
    block_max_.resize(n_blocks);
    for (int32_t b = 0; b < n_blocks; ++b)
      block_max_[b] = row_max(row + b * kBlock, std::min(kBlock, n_vocab_ - b * kBlock), &bad);
    if (bad) return -1;
    std::nth_element(block_max_.begin(), block_max_.begin() + (top_k_ - 1), block_max_.end(), std::greater<float>());
    floor = block_max_[top_k_ - 1];
  }
  cand_.clear();
  llama_token t = 0;
#if defined(__SSE__)
  const __m128 f4 = _mm_set1_ps(floor);
  for (; t + 4 <= n_vocab_; t += 4) {
    const int hits = _mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(row + t), f4));
    if (hits == 0) continue;
    for (int j = 0; j < 4; ++j) {
      if (hits & (1 << j)) cand_.push_back({t + j, row[t + j], 0.0f});
    }
  }
#endif
  for (; t < n_vocab_; ++t) {
    if (row[t] >= floor) cand_.push_back({t, row[t], 0.0f});
  }
  if (cand_.empty()) {  // only NaN at or above the floor: nothing to draw from
    bad = true;
    return -1;
  }
  const size_t k = std::min<size_t>(top_k_, cand_.size());
  std::partial_sort(
      cand_.begin(), cand_.begin() + k, cand_.end(),
      [](const llama_token_data& a, const llama_token_data& b) { return better(a.logit, a.id, b.logit, b.id); });
  cand_.resize(k);
  llama_token_data_array arr{cand_.data(), cand_.size(), -1, /*sorted=*/true};
  llama_sampler_apply(tail_, &arr);
  return arr.data[arr.selected].id;
}

llama_token Sampler::sample(float* row) {
  llama_token t = draw(row);
  if (t >= 0 && grammar_ != nullptr && !grammar_allows(t)) {
    // The tokens the grammar rejects leave the row (it is this step's alone; log-probabilities were
    // taken before), then the draw is made again.
    cand_.resize(n_vocab_);
    for (llama_token i = 0; i < n_vocab_; ++i) cand_[i] = {i, row[i], 0.0f};
    llama_token_data_array arr{cand_.data(), cand_.size(), -1, false};
    llama_sampler_apply(grammar_, &arr);
    for (llama_token i = 0; i < n_vocab_; ++i) {
      if (cand_[i].logit == -INFINITY) row[i] = -INFINITY;
    }
    t = draw(row);
    // Nothing the grammar allows is left to draw (its end is masked while the request is under its
    // minimum length): the request ends here, as at an end-of-generation token.
    if (t >= 0 && !grammar_allows(t)) return llama_vocab_eos(vocab_) >= 0 ? llama_vocab_eos(vocab_) : t;
  }
  if (t < 0) return -1;
  // An end-of-generation token ends the request; the grammar, which allowed it, needs no more.
  if (grammar_ != nullptr && !llama_vocab_is_eog(vocab_, t)) llama_sampler_accept(grammar_, t);
  accept(t);
  return t;
}

llama_token Sampler::draw(float* row) {
  adjust(row);
  llama_token t = -1;
  bool bad = false;
  if (greedy_) {
    t = argmax(row, n_vocab_, &bad);
  } else if (top_k_ > 0) {
    t = pick_top_k(row, bad);
  } else if (row_max(row, n_vocab_, &bad), !bad) {
    cand_.resize(n_vocab_);
    for (llama_token i = 0; i < n_vocab_; ++i) cand_[i] = {i, row[i], 0.0f};
    llama_token_data_array arr{cand_.data(), cand_.size(), -1, false};
    llama_sampler_apply(tail_, &arr);
    t = arr.data[arr.selected].id;
  }
  restore(row);
  return bad ? -1 : t;
}

// The largest value of a row, four lanes at a time where SSE exists (every x86-64 CPU has it).
// NaN never wins: max(NaN, m) keeps m.
float row_max(const float* x, int32_t n, bool* bad) {
  int32_t i = 0;
  float m = -INFINITY;
  bool nan = false;
#if defined(__SSE__)
  __m128 a = _mm_set1_ps(-INFINITY), b = a, c = a, d = a;
  __m128 u = _mm_setzero_ps();  // lanes that met a NaN: the check rides on the loads the maximum makes
  for (; i + 16 <= n; i += 16) {
    const __m128 x0 = _mm_loadu_ps(x + i), x1 = _mm_loadu_ps(x + i + 4), x2 = _mm_loadu_ps(x + i + 8),
                 x3 = _mm_loadu_ps(x + i + 12);
    a = _mm_max_ps(x0, a);
    b = _mm_max_ps(x1, b);
    c = _mm_max_ps(x2, c);
    d = _mm_max_ps(x3, d);
    if (bad) u = _mm_or_ps(u, _mm_or_ps(_mm_cmpunord_ps(x0, x1), _mm_cmpunord_ps(x2, x3)));
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, _mm_max_ps(_mm_max_ps(a, b), _mm_max_ps(c, d)));
  for (float l : lanes) m = l > m ? l : m;
  nan = _mm_movemask_ps(u) != 0;
#endif
  for (; i < n; ++i) {
    m = x[i] > m ? x[i] : m;
    nan = nan || x[i] != x[i];
  }
  if (bad != nullptr && (nan || m == INFINITY)) *bad = true;
  return m;
}

int32_t argmax(const float* x, int32_t n, bool* bad) {
  // The maximum first, then its first position: two streaming passes beat one that carries an
  // index through a dependency chain.
  const float m = row_max(x, n, bad);
  int32_t i = 0;
#if defined(__SSE__)
  const __m128 mm = _mm_set1_ps(m);
  for (; i + 4 <= n; i += 4) {
    if (_mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(x + i), mm)) != 0) break;
  }
#endif
  for (; i < n; ++i) {
    if (x[i] == m) return i;
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

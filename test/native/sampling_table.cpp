// Exact tables for native/sampling.cpp, in the manner of llama.cpp's test-sampling.cpp: small rows
// whose answer is known by hand. Each case names the rule it pins, and a plausible bug that would
// pass without it. doctest (Debian's doctest-dev); built and run by test/native/tables.test.ts.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "sampling.h"

namespace {

// One case: the rule in words, the token picked, the token wanted.
void check(const std::string& rule, llama_token got, llama_token want) { CHECK_MESSAGE(got == want, rule); }

// The token a sampler picks from `row` after it saw `seen` (the prompt, for the penalties).
llama_token pick(cml::SamplingParams p, std::vector<float> row, const std::vector<llama_token>& seen = {}) {
  cml::Sampler s(p, static_cast<int32_t>(row.size()));
  s.accept_prompt(seen);
  const std::vector<float> before = row;
  const llama_token t = s.sample(row.data());
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] != before[i] && !(std::isnan(row[i]) && std::isnan(before[i]))) {
      FAIL_CHECK("the row was not restored at " << i);
    }
  }
  return t;
}

cml::SamplingParams greedy() {
  cml::SamplingParams p;
  p.greedy = true;
  return p;
}

}  // namespace

TEST_CASE("sampling: every rule gives the token worked out by hand") {
  auto g = greedy();
  check("greedy: the largest logit", pick(g, {0.1f, 2.0f, -1.0f, 1.9f}), 1);
  check("greedy: ties go to the lower id", pick(g, {0.5f, 3.0f, 3.0f, 1.0f}), 1);

  // HF's repetition penalty divides a positive logit and multiplies a negative one. A penalty that
  // ignored the sign (divided both) would move a seen negative logit up, towards 0.
  auto rp = g;
  rp.repetition_penalty = 2.0f;
  check("repetition: a seen positive logit is divided (2.0 -> 1.0 < 1.5)", pick(rp, {2.0f, 1.5f, -5.0f}, {0}), 1);
  check("repetition: a seen negative logit is multiplied (-0.25 -> -0.5 < -0.3)", pick(rp, {-0.3f, -0.25f, -5.0f}, {1}),
        0);
  check("repetition: unseen tokens untouched", pick(rp, {-0.3f, -0.25f, -5.0f}, {2}), 1);
  check("repetition: a token seen twice is penalized once", pick(rp, {2.0f, 1.5f, -5.0f}, {0, 0}), 1);
  auto rp_low = g;
  rp_low.repetition_penalty = 0.5f;  // below 1: seen tokens favoured
  check("repetition below 1: a seen positive logit is doubled", pick(rp_low, {1.0f, 1.5f, -5.0f}, {0}), 0);

  // OpenAI's penalties: frequency times the count, presence once.
  auto freq = g;
  freq.frequency_penalty = 0.4f;
  check("frequency: counted (1.0 - 2 x 0.4 = 0.2 < 0.3)", pick(freq, {1.0f, 0.3f}, {0, 0}), 1);
  check("frequency: once is not enough (1.0 - 0.4 = 0.6 > 0.3)", pick(freq, {1.0f, 0.3f}, {0}), 0);
  auto pres = g;
  pres.presence_penalty = 0.4f;
  check("presence: once whatever the count (1.0 - 0.4 = 0.6 > 0.3)", pick(pres, {1.0f, 0.3f}, {0, 0, 0}), 0);

  // Logit bias first, then the penalties on the biased value.
  auto bias = g;
  bias.logit_bias = {{2, 5.0f}};
  check("bias: added to the raw logit", pick(bias, {1.0f, 2.0f, -2.0f}), 2);
  auto bias_rp = bias;
  bias_rp.repetition_penalty = 2.0f;
  check("bias then penalty: (-2 + 5) / 2 = 1.5 < 2.0", pick(bias_rp, {1.0f, 2.0f, -2.0f}, {2}), 1);

  // Sampling paths with one possible answer.
  cml::SamplingParams k1;
  k1.top_k = 1;
  k1.temperature = 1.0f;
  k1.seed = 7;
  check("top-k 1: always the largest", pick(k1, {0.1f, 0.2f, 4.0f, 3.9f, -1.0f}), 2);
  cml::SamplingParams p_small;
  p_small.top_p = 0.01f;
  p_small.temperature = 1.0f;
  p_small.seed = 7;
  check("top-p 0.01: only the most likely survives", pick(p_small, {0.1f, 6.0f, 0.2f, 0.0f}), 1);
  cml::SamplingParams minp;
  minp.min_p = 0.99f;
  minp.temperature = 1.0f;
  minp.seed = 3;
  check("min-p 0.99: only tokens within 1% of the best", pick(minp, {-2.0f, 0.0f, 5.0f, 1.0f}), 2);

  // Rows no draw can make sense of: -1, and the row unchanged.
  const float nan = std::nanf("");
  check("NaN anywhere: refused (greedy)", pick(g, {1.0f, nan, 0.5f}), -1);
  check("+inf: refused (greedy)", pick(g, {1.0f, INFINITY, 0.5f}), -1);
  check("NaN: refused (top-k)", pick(k1, {1.0f, 0.2f, nan, 0.5f, 0.1f}), -1);
  check("-inf is a masked token, not an error", pick(g, {-INFINITY, 0.5f, -INFINITY}), 1);
}

namespace {

// Every token drawn from `row` over seeds 1..n: a filter that keeps too much shows up as a token
// outside the set, one that keeps too little as a token never drawn.
std::set<llama_token> drawn(cml::SamplingParams p, const std::vector<float>& row, uint32_t n = 400) {
  std::set<llama_token> out;
  for (uint32_t seed = 1; seed <= n; ++seed) {
    p.seed = seed;
    out.insert(pick(p, row));
  }
  return out;
}

std::vector<float> logits_of(const std::vector<float>& probs) {
  std::vector<float> row;
  for (float q : probs) row.push_back(std::log(q));
  return row;
}

using Tokens = std::set<llama_token>;

}  // namespace

TEST_CASE("sampling: draws stay within what top-k, top-p and min-p keep, and reach all of it") {
  cml::SamplingParams p;
  p.temperature = 1.0f;

  auto k2 = p;
  k2.top_k = 2;
  CHECK(drawn(k2, {1.0f, 3.0f, 2.0f, 0.0f}) == Tokens{1, 2});
  auto k_big = p;
  k_big.top_k = 100;  // more than the vocabulary: all of it
  CHECK(drawn(k_big, {0.0f, 0.0f, 0.0f, 0.0f}) == Tokens{0, 1, 2, 3});
  CHECK(drawn(p, {0.0f, 0.0f, 0.0f, 0.0f}) == Tokens{0, 1, 2, 3});  // top-k 0 and top-p 1: off

  // Probabilities 0.6, 0.3, 0.1: the smallest set reaching top_p, as transformers keeps it.
  const auto row = logits_of({0.6f, 0.3f, 0.1f});
  auto p55 = p;
  p55.top_p = 0.55f;
  CHECK(drawn(p55, row) == Tokens{0});
  auto p65 = p;
  p65.top_p = 0.65f;
  CHECK(drawn(p65, row) == Tokens{0, 1});
  auto p95 = p;
  p95.top_p = 0.95f;
  CHECK(drawn(p95, row) == Tokens{0, 1, 2});

  // min-p 0.4 of the best (0.5): 0.25 stays, 0.15 and 0.1 go.
  auto mp = p;
  mp.min_p = 0.4f;
  CHECK(drawn(mp, logits_of({0.5f, 0.25f, 0.15f, 0.1f})) == Tokens{0, 1});
  // With top-k first: k 3 keeps 0.5, 0.25, 0.15; min-p still cuts 0.15.
  auto kmp = mp;
  kmp.top_k = 3;
  CHECK(drawn(kmp, logits_of({0.5f, 0.25f, 0.15f, 0.1f})) == Tokens{0, 1});
}

TEST_CASE("sampling: penalties on negative logits, exactly") {
  auto g = greedy();
  // Frequency and presence subtract whatever the sign: -1.0 seen twice, 0.4 each -> -1.8 < -1.5.
  auto freq = g;
  freq.frequency_penalty = 0.4f;
  check("frequency on a negative logit: -1.0 - 0.8 = -1.8 < -1.5", pick(freq, {-1.0f, -1.5f}, {0, 0}), 1);
  auto pres = g;
  pres.presence_penalty = 0.4f;
  check("presence on a negative logit: -1.0 - 0.4 = -1.4 > -1.5", pick(pres, {-1.0f, -1.5f}, {0, 0}), 0);
  // A negative presence penalty favours what was seen.
  pres.presence_penalty = -0.6f;
  check("negative presence: -1.5 + 0.6 = -0.9 > -1.0", pick(pres, {-1.0f, -1.5f}, {1}), 1);
  // Repetition penalty and a negative bias together: (2.0 - 3.0) x 2 = -2.0 < -1.9.
  auto rb = g;
  rb.repetition_penalty = 2.0f;
  rb.logit_bias = {{0, -3.0f}};
  check("bias then repetition on the now negative logit", pick(rb, {2.0f, -1.9f}, {0}), 1);
}

// Exact tables for native/sampling.cpp, in the manner of llama.cpp's test-sampling.cpp: small rows
// whose answer is known by hand. Each case names the rule it pins, and a plausible bug that would
// pass without it. doctest (Debian's doctest-dev); built and run by test/native/tables.test.ts.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
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

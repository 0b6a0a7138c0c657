// Sampling cost per token, alone (no model): native/sampling.cpp on random logits rows, greedy and
// the studio's default (temperature 0.8, top-k 50, repetition penalty 1.1), each request a
// 200-token prompt and 128 new tokens; beside it, the same studio sampling through llama.cpp's own
// sampler chain, as llama_sampler_sample runs it (a candidate per vocabulary entry).
// `npm run bench:sampling -- [vocab] [tokens]`.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "sampling.h"

int main(int argc, char** argv) {
  const int n_vocab = argc > 1 ? std::atoi(argv[1]) : 32000;
  const int tokens = argc > 2 ? std::atoi(argv[2]) : 4096;
  std::mt19937 rng(1);
  std::normal_distribution<float> logit(0, 3);
  std::vector<std::vector<float>> rows(64, std::vector<float>(n_vocab));  // more than the caches hold at 128k
  for (auto& r : rows)
    for (auto& v : r) v = logit(rng);
  std::vector<llama_token> prompt(200);
  for (int i = 0; i < 200; ++i) prompt[i] = (i * 7919) % n_vocab;

  cml::SamplingParams greedy;
  greedy.greedy = true;
  cml::SamplingParams studio;
  studio.temperature = 0.8f;
  studio.top_k = 50;
  studio.repetition_penalty = 1.1f;
  studio.seed = 1;
  for (const auto& [name, p] : {std::pair{"greedy", greedy}, std::pair{"studio", studio}}) {
    std::unique_ptr<cml::Sampler> s;
    long check = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < tokens; ++i) {
      if (i % 128 == 0) {
        s = std::make_unique<cml::Sampler>(p, n_vocab);
        s->accept_prompt(prompt);
      }
      check += s->sample(rows[i % rows.size()].data());
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / tokens;
    std::printf("vocab %d  %-22s  %7.2f us/token  (checksum %ld)\n", n_vocab, name, us, check);
  }

  // llama.cpp's chain: penalties over the whole window, top-k, temperature, draw.
  llama_sampler* chain = nullptr;
  std::vector<llama_token_data> cur(n_vocab);
  long check = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < tokens; ++i) {
    if (i % 128 == 0) {
      if (chain != nullptr) llama_sampler_free(chain);
      chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
      llama_sampler* penalties = llama_sampler_init_penalties(n_vocab, 4096, 1.1f, 0.0f, 0.0f);
      llama_sampler_chain_add(chain, penalties);
      llama_sampler_chain_add(chain, llama_sampler_init_top_k(50));
      llama_sampler_chain_add(chain, llama_sampler_init_temp(0.8f));
      llama_sampler_chain_add(chain, llama_sampler_init_dist(1));
      for (llama_token t : prompt) llama_sampler_accept(penalties, t);
    }
    const float* row = rows[i % rows.size()].data();
    for (llama_token t = 0; t < n_vocab; ++t) cur[t] = {t, row[t], 0.0f};
    llama_token_data_array arr{cur.data(), cur.size(), -1, false};
    llama_sampler_apply(chain, &arr);
    const llama_token t = arr.data[arr.selected].id;
    llama_sampler_accept(chain, t);
    check += t;
  }
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / tokens;
  std::printf("vocab %d  %-22s  %7.2f us/token  (checksum %ld)\n", n_vocab, "studio, llama.cpp chain", us, check);
  llama_sampler_free(chain);
}

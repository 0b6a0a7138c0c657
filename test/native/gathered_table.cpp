// The gathered kernel (native/gathered_lora.cpp) against a double-precision reference, for each
// of its loops this CPU can run (AVX2, and the portable ones that a CPU without AVX2 gets and that
// no model test reaches here). Each row names the path it pins: the tails of n_in and n_out that
// the vector loops leave, every block size of a member's tokens (kJ = 4 at a time), the split by
// output columns when threads outnumber tokens, tokens of two members or none, F16 and F32 copies,
// and the copy into a separate dst. Built and run by test/native/tables.test.ts.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gathered_lora.h"

namespace {

using cml::AdapterBank;
using cml::GatheredIsa;

struct Case {
  std::string name;
  int64_t n_in, n_out, n;
  std::vector<int64_t> ranks;  // the members', stacked in this order
  // Per token, its scale for each member (0: the member is not the token's).
  std::vector<std::vector<float>> scales;
  bool f16 = true;
  int nth = 1;
  bool inplace = true;
};

// Every token with member t % members at 0.5 (and no other).
std::vector<std::vector<float>> one_each(int64_t n, size_t members) {
  std::vector<std::vector<float>> s(n, std::vector<float>(members, 0.0f));
  for (int64_t t = 0; t < n; ++t) s[t][t % members] = 0.5f;
  return s;
}

// Runs the case on `isa` and checks each output against the reference; returns the largest error.
double run(const Case& c, GatheredIsa isa) {
  int64_t rows = 0;
  AdapterBank::Layout layout;
  for (size_t m = 0; m < c.ranks.size(); ++m) {
    AdapterBank::Segment s;
    s.member = static_cast<int32_t>(m);
    s.offset = rows;
    s.rank = s.stride = c.ranks[m];
    layout.segments.push_back(s);
    rows += c.ranks[m];
  }
  layout.rows = rows;
  ggml_init_params ip{static_cast<size_t>(64) << 20, nullptr, false};
  ggml_context* ctx = ggml_init(ip);
  const ggml_type wt = c.f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
  ggml_tensor* res = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, c.n_out, c.n);
  ggml_tensor* cur = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, c.n_in, c.n);
  ggml_tensor* a = ggml_new_tensor_2d(ctx, wt, c.n_in, rows);
  const int64_t b_cols = cml::gathered_b_cols(c.n_out);
  ggml_tensor* b = ggml_new_tensor_2d(ctx, wt, b_cols, rows);  // each member's rows in tiles (gathered_b_at)
  ggml_tensor* mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, rows, c.n);
  ggml_tensor* dst = c.inplace ? res : ggml_new_tensor_2d(ctx, GGML_TYPE_F32, c.n_out, c.n);
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<double> av(c.n_in * rows), bv(c.n_out * rows), x(c.n_in * c.n), r0(c.n_out * c.n);
  // A weight as the kernel reads it (rounded to F16 first when F16), and its value for the reference.
  auto put = [&](ggml_tensor* t, int64_t i, float v) -> double {
    if (!c.f16) return static_cast<float*>(t->data)[i] = v;
    static_cast<ggml_fp16_t*>(t->data)[i] = ggml_fp32_to_fp16(v);
    return ggml_fp16_to_fp32(static_cast<ggml_fp16_t*>(t->data)[i]);
  };
  for (int64_t i = 0; i < c.n_in * rows; ++i) av[i] = put(a, i, 0.2f * u(gen));
  // B[r, o] of the member of segment s, bv's row s.offset + r, in its tile; the padding 0, as the bank fills it.
  for (int64_t i = 0; i < b_cols * rows; ++i) put(b, i, 0.0f);
  for (const auto& s : layout.segments) {
    for (int64_t r = 0; r < s.rank; ++r) {
      for (int64_t o = 0; o < c.n_out; ++o) {
        bv[(s.offset + r) * c.n_out + o] = put(b, s.offset * b_cols + cml::gathered_b_at(s.rank, r, o), 0.2f * u(gen));
      }
    }
  }
  for (int64_t i = 0; i < c.n_in * c.n; ++i) x[i] = static_cast<float*>(cur->data)[i] = u(gen);
  for (int64_t i = 0; i < c.n_out * c.n; ++i) r0[i] = static_cast<float*>(res->data)[i] = u(gen);
  // The mask as fill_masks writes it: each member's rows of a token's column hold its scale.
  for (int64_t t = 0; t < c.n; ++t) {
    for (const auto& s : layout.segments) {
      for (int64_t r = 0; r < s.rank; ++r)
        static_cast<float*>(mask->data)[t * rows + s.offset + r] = c.scales[t][s.member];
    }
  }
  dst->src[0] = res;
  dst->src[1] = cur;
  dst->src[2] = a;
  dst->src[3] = b;
  dst->src[4] = mask;
  for (int ith = 0; ith < c.nth; ++ith) cml::gathered_lora_as(isa, dst, ith, c.nth, &layout);

  double worst = 0.0;
  for (int64_t t = 0; t < c.n; ++t) {
    for (int64_t o = 0; o < c.n_out; ++o) {
      double want = r0[t * c.n_out + o];
      for (const auto& s : layout.segments) {
        const double k = c.scales[t][s.member];
        if (k == 0.0) continue;
        for (int64_t r = 0; r < s.rank; ++r) {
          double dot = 0.0;
          for (int64_t i = 0; i < c.n_in; ++i) dot += av[(s.offset + r) * c.n_in + i] * x[t * c.n_in + i];
          want += bv[(s.offset + r) * c.n_out + o] * k * dot;
        }
      }
      const float got = static_cast<float*>(dst->data)[t * c.n_out + o];
      bool untouched = true;
      for (float k : c.scales[t]) untouched = untouched && k == 0.0f;
      if (untouched) {
        // A token of no member keeps the product bit for bit.
        CHECK_MESSAGE(got == static_cast<float>(r0[t * c.n_out + o]), c.name << ": token " << t << " changed");
      }
      worst = std::max(worst, std::fabs(got - want));
    }
  }
  ggml_free(ctx);
  return worst;
}

Case row(std::string name, int64_t n_in, int64_t n_out, int64_t n, std::vector<int64_t> ranks,
         std::vector<std::vector<float>> scales, bool f16 = true, int nth = 1, bool inplace = true) {
  return Case{std::move(name), n_in, n_out, n, std::move(ranks), std::move(scales), f16, nth, inplace};
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = [] {
    std::vector<Case> v;
    v.push_back(row("60m attention shape: 8 tokens of two members, 2 threads by token", 512, 512, 8, {16, 16},
                    one_each(8, 2), true, 2));
    v.push_back(row("ffn_down shape (1536 in), F32 copies", 1536, 512, 4, {16}, one_each(4, 1), false, 2));
    v.push_back(row("n_in and n_out past every vector width (37 in, 29 out), ranks 3 and 5", 37, 29, 5, {3, 5},
                    one_each(5, 2), false));
    v.push_back(row("n_out tails of each block loop: 91 = 64 + 3 x 8 + 3 for a lone token, F16", 70, 91, 1, {4},
                    one_each(1, 1)));
    for (int64_t n = 1; n <= 9; ++n) {
      v.push_back(row("one member, " + std::to_string(n) + " tokens (blocks of 4, then the rest)", 48, 40, n, {8},
                      one_each(n, 1)));
    }
    v.push_back(row("fewer tokens than threads: output columns split 3 ways on tiles (100 = 32/32/36)", 64, 100, 2, {8},
                    one_each(2, 1), true, 3));
    v.push_back(row("a lone token on 4 threads: 53 columns as 8/16/8/21, the last tile partial", 32, 53, 1, {2},
                    one_each(1, 1), true, 4));
    v.push_back(row("rank 1", 40, 24, 3, {1}, one_each(3, 1)));
    // Token 0: both members (a set of two adapters); 1: none (the base model); 2: the second at -1.5.
    v.push_back(row("a token of two members, one of none, a negative scale; dst apart from res (copied)", 33, 17, 3,
                    {4, 6}, {{0.5f, 0.25f}, {0.0f, 0.0f}, {0.0f, -1.5f}}, true, 2, false));
    v.push_back(row("three members over 7 tokens on 2 threads (each thread's groups interleaved)", 64, 48, 7, {4, 8, 2},
                    one_each(7, 3), true, 2));
    {
      // Slots a a a b b c c c, a base token, b b: threads take runs of a member's tokens, and every
      // token (the base one too, copied) exactly once.
      std::vector<std::vector<float>> s(11, std::vector<float>(3, 0.0f));
      const int member[] = {0, 0, 0, 1, 1, 2, 2, 2, -1, 1, 1};
      for (int t = 0; t < 11; ++t) {
        if (member[t] >= 0) s[t][member[t]] = 0.75f;
      }
      v.push_back(row("members in runs of slots and a base token, 3 threads, copied", 40, 56, 11, {4, 4, 4}, s, true, 3,
                      false));
    }
    {
      // One adapted token among base ones: fewer adapted tokens than threads, so columns are split.
      std::vector<std::vector<float>> s(6, std::vector<float>(1, 0.0f));
      s[4][0] = 1.0f;
      v.push_back(
          row("one adapted token among five base ones on 2 threads, copied", 32, 45, 6, {8}, s, true, 2, false));
    }
    return v;
  }();
  return all;
}

}  // namespace

TEST_CASE("the gathered kernel's loops agree with a double-precision reference") {
  std::vector<GatheredIsa> isas = {GatheredIsa::Portable};
  if (cml::gathered_isa() == GatheredIsa::Avx2) isas.push_back(GatheredIsa::Avx2);
  for (GatheredIsa isa : isas) {
    const std::string name = isa == GatheredIsa::Avx2 ? "avx2" : "portable";
    for (const Case& c : cases()) {
      const double worst = run(c, isa);
      // Values of order 1, sums of at most a few thousand float products.
      CHECK_MESSAGE(worst < 2e-5, name << ", " << c.name << ": largest error " << worst);
    }
  }
}

TEST_CASE("the kernel takes AVX2 exactly where /proc/cpuinfo lists avx2, fma and f16c") {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  bool avx2 = false, fma = false, f16c = false;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    for (std::string w; words >> w;) {
      avx2 = avx2 || w == "avx2";
      fma = fma || w == "fma";
      f16c = f16c || w == "f16c";
    }
    break;
  }
  CHECK(cml::gathered_isa() == (avx2 && fma && f16c ? GatheredIsa::Avx2 : GatheredIsa::Portable));
}

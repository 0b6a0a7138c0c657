// The gathered kernel (gathered_lora.h).
#include "gathered_lora.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace cml {

namespace {

// The kernel's two loops: Σ a[i] x[i] over a row of A, and y += k · a row of B. With AVX2, FMA and
// F16C (chosen once, at load) in intrinsics, reading F16 rows as they are; else in GCC's vector
// types for the baseline ISA, F16 rows converted first.
typedef float v8f __attribute__((vector_size(32)));

float dot_base(const float* a, const float* b, int64_t n) {
  v8f s0 = {}, s1 = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    v8f a0, a1, b0, b1;
    std::memcpy(&a0, a + i, sizeof a0);
    std::memcpy(&a1, a + i + 8, sizeof a1);
    std::memcpy(&b0, b + i, sizeof b0);
    std::memcpy(&b1, b + i + 8, sizeof b1);
    s0 += a0 * b0;
    s1 += a1 * b1;
  }
  const v8f v = s0 + s1;
  float sum = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void axpy_base(float* y, const float* x, float k, int64_t n) {
  const v8f kk = {k, k, k, k, k, k, k, k};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f xv, yv;
    std::memcpy(&xv, x + i, sizeof xv);
    std::memcpy(&yv, y + i, sizeof yv);
    yv += kk * xv;
    std::memcpy(y + i, &yv, sizeof yv);
  }
  for (; i < n; ++i) y[i] += k * x[i];
}

#if defined(__x86_64__)
#define CML_AVX2 __attribute__((target("avx2,fma,f16c")))
CML_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
CML_AVX2 inline __m256 load8(const ggml_fp16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
CML_AVX2 inline float load1(const float* p) { return *p; }
CML_AVX2 inline float load1(const ggml_fp16_t* p) { return _cvtsh_ss(*p); }

// How far ahead of its reads the kernel prefetches a member's rows (A's, which lie one after the
// other, and B's tiles): a member's rows are read once a step, so they come from DRAM or a far cache,
// and the hardware's prefetchers stop at every 4 KB page.
constexpr int64_t kAhead = 2048;

// The tokens of a group are taken up to kJ at a time, each with accumulators of its own: the rows
// of A and B are read (and converted from F16) once for all of them, and the FMAs of the tokens
// are independent, where one token's alone wait on each other (an FMA's latency is 4 cycles).
// M, the tokens of a block, is a template argument so that the accumulators stay in registers.
constexpr size_t kJ = 4;

// u_j = Σ_i a[i] x_j[i] for M tokens: per token Q sums over interleaved 8-blocks (4 for a lone
// token, so that it too has independent chains), added pairwise, then the 8 lanes pairwise and
// the tail in order.
template <size_t M, typename T>
CML_AVX2 void dots_block(const T* a, int64_t n, const float* const* xs, float* u) {
  constexpr size_t Q = M == 1 ? 4 : 2;
  constexpr int64_t W = 8 * Q;
  __m256 acc[M][Q];
  for (size_t j = 0; j < M; ++j)
    for (size_t q = 0; q < Q; ++q) acc[j][q] = _mm256_setzero_ps();
  constexpr int64_t kStep = W * static_cast<int64_t>(sizeof(T));  // the bytes of `a` an iteration reads
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const char* ahead = reinterpret_cast<const char*>(a + i) + kAhead;
    if constexpr (kStep >= 64) {
      for (int64_t b = 0; b < kStep; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    } else if (i * static_cast<int64_t>(sizeof(T)) % 64 == 0) {
      _mm_prefetch(ahead, _MM_HINT_T0);
    }
    for (size_t q = 0; q < Q; ++q) {
      const __m256 av = load8(a + i + 8 * q);
      for (size_t j = 0; j < M; ++j) acc[j][q] = _mm256_fmadd_ps(av, _mm256_loadu_ps(xs[j] + i + 8 * q), acc[j][q]);
    }
  }
  for (size_t j = 0; j < M; ++j) {
    __m256 v = _mm256_add_ps(acc[j][0], acc[j][1]);
    if constexpr (Q == 4) v = _mm256_add_ps(v, _mm256_add_ps(acc[j][2], acc[j][3]));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float sum = _mm_cvtss_f32(h);
    for (int64_t k = i; k < n; ++k) sum += load1(a + k) * xs[j][k];
    u[j] = sum;
  }
}

// out_j[o..o1) += Σ_r u_j[r] · B[r][o..o1) for M tokens, P tiles (8 columns each, at a tile's
// first column o) at a time, from `blk`, a member's block of B in tiles (gathered_b_at): output
// columns in registers across the member's rows (each out read and written once, not once a row),
// each tile read once for the M tokens, M x P chains of FMAs, and the block kAhead bytes on
// prefetched first. The sums run over r in order, as the portable loop's do.
template <size_t M, size_t P, typename T>
CML_AVX2 int64_t rows_blocks(const T* blk, int64_t rank, int64_t o, int64_t o1, const float* u, float* const* outs) {
  constexpr int64_t kTile = kGatheredTile;
  const int64_t tile_bytes = rank * kTile * static_cast<int64_t>(sizeof(T));
  for (; o + kTile * static_cast<int64_t>(P) <= o1; o += kTile * P) {
    const T* tiles = blk + o / kTile * rank * kTile;
    const char* ahead = reinterpret_cast<const char*>(tiles) + kAhead;
    for (int64_t b = 0; b < tile_bytes * static_cast<int64_t>(P); b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    __m256 acc[M][P];
    for (size_t j = 0; j < M; ++j)
      for (size_t p = 0; p < P; ++p) acc[j][p] = _mm256_loadu_ps(outs[j] + o + kTile * p);
    for (int64_t r = 0; r < rank; ++r) {
      __m256 v[P];
      for (size_t p = 0; p < P; ++p) v[p] = load8(tiles + (static_cast<int64_t>(p) * rank + r) * kTile);
      for (size_t j = 0; j < M; ++j) {
        const __m256 k = _mm256_set1_ps(u[j * rank + r]);
        for (size_t p = 0; p < P; ++p) acc[j][p] = _mm256_fmadd_ps(k, v[p], acc[j][p]);
      }
    }
    for (size_t j = 0; j < M; ++j)
      for (size_t p = 0; p < P; ++p) _mm256_storeu_ps(outs[j] + o + kTile * p, acc[j][p]);
  }
  return o;
}

// Eight chains in all (the FMA units' latency times their throughput), then single tiles, then
// the columns of a last, partial tile one by one.
template <size_t M, typename T>
CML_AVX2 void rows_block(const T* blk, int64_t rank, int64_t o0, int64_t o1, const float* u, float* const* outs) {
  constexpr size_t P = M >= 4 ? 2 : 8 / M;
  int64_t o = rows_blocks<M, P>(blk, rank, o0, o1, u, outs);
  if constexpr (P > 1) o = rows_blocks<M, 1>(blk, rank, o, o1, u, outs);
  for (; o < o1; ++o) {
    for (size_t j = 0; j < M; ++j) {
      for (int64_t r = 0; r < rank; ++r) outs[j][o] += u[j * rank + r] * load1(blk + gathered_b_at(rank, r, o));
    }
  }
}

// The n tokens of a group, kJ at a time: the dots of row `a` into u[0..n), and B's rows into outs.
template <typename T>
CML_AVX2 void dots_avx2(const T* a, int64_t n_in, const float* const* xs, size_t n, float* u) {
  for (size_t j = 0; j < n; j += kJ) {
    switch (std::min(kJ, n - j)) {
      case 1:
        dots_block<1>(a, n_in, xs + j, u + j);
        break;
      case 2:
        dots_block<2>(a, n_in, xs + j, u + j);
        break;
      case 3:
        dots_block<3>(a, n_in, xs + j, u + j);
        break;
      default:
        dots_block<4>(a, n_in, xs + j, u + j);
        break;
    }
  }
}
template <typename T>
CML_AVX2 void add_rows_avx2(const T* blk, int64_t rank, int64_t o0, int64_t o1, const float* u, float* const* outs,
                            size_t n) {
  for (size_t j = 0; j < n; j += kJ) {
    const float* uj = u + j * rank;
    switch (std::min(kJ, n - j)) {
      case 1:
        rows_block<1>(blk, rank, o0, o1, uj, outs + j);
        break;
      case 2:
        rows_block<2>(blk, rank, o0, o1, uj, outs + j);
        break;
      case 3:
        rows_block<3>(blk, rank, o0, o1, uj, outs + j);
        break;
      default:
        rows_block<4>(blk, rank, o0, o1, uj, outs + j);
        break;
    }
  }
}
#undef CML_AVX2
// A static initializer may run before libgcc's own: __builtin_cpu_init first, as GCC asks.
const bool kAvx2 = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}();
#else
constexpr bool kAvx2 = false;
template <typename T>
void dots_avx2(const T*, int64_t, const float* const*, size_t, float*) {}
template <typename T>
void add_rows_avx2(const T*, int64_t, int64_t, int64_t, const float*, float* const*, size_t) {}
#endif

// `len` values of a gathered copy (F32 or F16) from element `at`, for the portable loops: an F16
// run is converted into `scratch` first (exactly: every F16 value is an F32 one).
struct Values {
  const ggml_tensor* t;
  std::vector<float> scratch;
  const float* f32(int64_t at, int64_t len) {
    if (t->type == GGML_TYPE_F32) return static_cast<const float*>(t->data) + at;
    scratch.resize(len);
    ggml_fp16_to_fp32_row(static_cast<const ggml_fp16_t*>(t->data) + at, scratch.data(), len);
    return scratch.data();
  }
};

// A thread's share of a call: its tokens, and the output columns [o0, o1) it writes for them.
struct Share {
  std::vector<int64_t> tokens;
  int64_t o0 = 0, o1 = 0;
};

// The batch's tokens in order of their first member (those of none last), cut into nth runs of
// about equal work (a member's rows for a token; a copy, when dst is not res, a sixteenth of
// that), so that each thread reads the rows of as few members as it can: dealt round-robin,
// tokens of two adapters in slots a, a, b, b would have both threads read both. A token's members
// all go to one thread (two adding to one row would race). With fewer adapted tokens than threads,
// every thread takes every token and its share of the columns instead.
Share share_of(const AdapterBank::Layout& layout, const float* scales, int64_t rows, int64_t n, int64_t n_out, int ith,
               int nth, bool copy) {
  const size_t k = layout.segments.size();
  std::vector<size_t> first(n, k);
  std::vector<int64_t> weight(n, copy ? 1 : 0);
  int64_t adapted = 0;
  for (int64_t t = 0; t < n; ++t) {
    for (size_t m = 0; m < k; ++m) {
      if (scales[t * rows + layout.segments[m].offset] == 0.0f) continue;
      first[t] = std::min(first[t], m);
      weight[t] += 16;
    }
    adapted += first[t] < k;
  }
  Share s;
  if (adapted < nth) {
    s.tokens.resize(n);
    for (int64_t t = 0; t < n; ++t) s.tokens[t] = t;
    // On tile boundaries (the last share takes the partial tile).
    auto edge = [&](int i) { return i == nth ? n_out : n_out * i / nth / kGatheredTile * kGatheredTile; };
    s.o0 = edge(ith);
    s.o1 = edge(ith + 1);
    return s;
  }
  s.o1 = n_out;
  int64_t total = 0;
  for (int64_t w : weight) total += w;
  int64_t before = 0;  // the work of the tokens ahead in the order
  for (size_t key = 0; key <= k; ++key) {
    for (int64_t t = 0; t < n; ++t) {
      if (first[t] != key) continue;
      if (std::min<int64_t>(nth - 1, before * nth / total) == ith) s.tokens.push_back(t);
      before += weight[t];
    }
  }
  return s;
}

}  // namespace

GatheredIsa gathered_isa() { return kAvx2 ? GatheredIsa::Avx2 : GatheredIsa::Portable; }

void gathered_lora(ggml_tensor* dst, int ith, int nth, void* userdata) {
  gathered_lora_as(gathered_isa(), dst, ith, nth, userdata);
}

void gathered_lora_as(GatheredIsa isa, ggml_tensor* dst, int ith, int nth, void* userdata) {
  const bool avx2 = isa == GatheredIsa::Avx2 && kAvx2;
  const auto& layout = *static_cast<const AdapterBank::Layout*>(userdata);
  const ggml_tensor *res = dst->src[0], *cur = dst->src[1], *a = dst->src[2], *b = dst->src[3], *mask = dst->src[4];
  const int64_t n_in = cur->ne[0], n_out = res->ne[0], rows = mask->ne[0];  // = layout.rows (all members)
  const int64_t b_cols = b->ne[0];                                          // gathered_b_cols(n_out)
  const int64_t n = ggml_nelements(cur) / n_in;
  const auto* x = static_cast<const float*>(cur->data);
  const auto* scales = static_cast<const float*>(mask->data);
  auto* out = static_cast<float*>(dst->data);
  const Share share = share_of(layout, scales, rows, n, n_out, ith, nth, out != res->data);
  const std::vector<int64_t>& mine = share.tokens;
  const int64_t o0 = share.o0, o1 = share.o1;
  if (out != res->data) {
    for (int64_t t : mine)
      std::copy_n(static_cast<const float*>(res->data) + t * n_out + o0, o1 - o0, out + t * n_out + o0);
  }
  // Member by member, the tokens that use it: each of its rows of A and B is read once for all of
  // them (and converted once, when F16).
  std::vector<int64_t> group;
  std::vector<float> u;
  std::vector<float*> outs;
  std::vector<const float*> xs;
  std::vector<float> d;
  Values avals{a, {}}, bvals{b, {}};
  for (const AdapterBank::Segment& s : layout.segments) {
    group.clear();
    for (int64_t t : mine) {
      if (scales[t * rows + s.offset] != 0.0f) group.push_back(t);
    }
    if (group.empty()) continue;
    u.assign(group.size() * s.rank, 0.0f);
    if (avx2) {
      xs.clear();
      outs.clear();
      for (int64_t t : group) {
        xs.push_back(x + t * n_in);
        outs.push_back(out + t * n_out);
      }
      d.resize(group.size());
      for (int64_t r = 0; r < s.rank; ++r) {
        const int64_t at = (s.offset + r) * n_in;
        if (a->type == GGML_TYPE_F32) {
          dots_avx2(static_cast<const float*>(a->data) + at, n_in, xs.data(), xs.size(), d.data());
        } else {
          dots_avx2(static_cast<const ggml_fp16_t*>(a->data) + at, n_in, xs.data(), xs.size(), d.data());
        }
        for (size_t j = 0; j < group.size(); ++j) u[j * s.rank + r] = scales[group[j] * rows + s.offset] * d[j];
      }
      const int64_t blk = s.offset * b_cols;
      if (b->type == GGML_TYPE_F32) {
        add_rows_avx2(static_cast<const float*>(b->data) + blk, s.rank, o0, o1, u.data(), outs.data(), outs.size());
      } else {
        add_rows_avx2(static_cast<const ggml_fp16_t*>(b->data) + blk, s.rank, o0, o1, u.data(), outs.data(),
                      outs.size());
      }
      continue;
    }
    for (int64_t r = 0; r < s.rank; ++r) {
      const float* row = avals.f32((s.offset + r) * n_in, n_in);
      for (size_t j = 0; j < group.size(); ++j) {
        const int64_t t = group[j];
        u[j * s.rank + r] = scales[t * rows + s.offset] * dot_base(row, x + t * n_in, n_in);
      }
    }
    // A tile at a time (its rows one after the other, gathered_b_at), each column's sum over r in order.
    for (int64_t o = o0; o < o1; o += kGatheredTile) {
      const int64_t len = std::min(kGatheredTile, o1 - o);
      for (int64_t r = 0; r < s.rank; ++r) {
        const float* tile_row = bvals.f32(s.offset * b_cols + gathered_b_at(s.rank, r, o), len);
        for (size_t j = 0; j < group.size(); ++j)
          axpy_base(out + group[j] * n_out + o, tile_row, u[j * s.rank + r], len);
      }
    }
  }
}

}  // namespace cml

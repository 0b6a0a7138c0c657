// The gathered kernel (gathered_lora.h): its loops in GCC's vector types, AVX2 with FMA where the
// CPU has them, chosen once.
#include "gathered_lora.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace cml {

namespace {

// The kernel's two loops, in GCC's vector types (8 floats): one body, compiled for AVX2 with FMA
// where the CPU has them (chosen once, at first use) and for the baseline ISA else.
typedef float v8f __attribute__((vector_size(32)));

#define CML_DOT_BODY                                                             \
  v8f s0 = {}, s1 = {};                                                          \
  int64_t i = 0;                                                                 \
  for (; i + 16 <= n; i += 16) {                                                 \
    v8f a0, a1, b0, b1;                                                          \
    std::memcpy(&a0, a + i, sizeof a0);                                          \
    std::memcpy(&a1, a + i + 8, sizeof a1);                                      \
    std::memcpy(&b0, b + i, sizeof b0);                                          \
    std::memcpy(&b1, b + i + 8, sizeof b1);                                      \
    s0 += a0 * b0;                                                               \
    s1 += a1 * b1;                                                               \
  }                                                                              \
  const v8f v = s0 + s1;                                                         \
  float sum = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); \
  for (; i < n; ++i) sum += a[i] * b[i];                                         \
  return sum;

#define CML_AXPY_BODY                      \
  const v8f kk = {k, k, k, k, k, k, k, k}; \
  int64_t i = 0;                           \
  for (; i + 8 <= n; i += 8) {             \
    v8f xv, yv;                            \
    std::memcpy(&xv, x + i, sizeof xv);    \
    std::memcpy(&yv, y + i, sizeof yv);    \
    yv += kk * xv;                         \
    std::memcpy(y + i, &yv, sizeof yv);    \
  }                                        \
  for (; i < n; ++i) y[i] += k * x[i];

float dot_base(const float* a, const float* b, int64_t n) { CML_DOT_BODY }
void axpy_base(float* y, const float* x, float k, int64_t n) { CML_AXPY_BODY }
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, int64_t n) { CML_DOT_BODY }
__attribute__((target("avx2,fma"))) void axpy_avx2(float* y, const float* x, float k, int64_t n) { CML_AXPY_BODY }
const bool kAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
constexpr bool kAvx2 = false;
float dot_avx2(const float* a, const float* b, int64_t n) { return dot_base(a, b, n); }
void axpy_avx2(float* y, const float* x, float k, int64_t n) { axpy_base(y, x, k, n); }
#endif
// Σ a[i] b[i]
float dot(const float* a, const float* b, int64_t n) { return kAvx2 ? dot_avx2(a, b, n) : dot_base(a, b, n); }
// y[i] += k x[i]
void axpy(float* y, const float* x, float k, int64_t n) { kAvx2 ? axpy_avx2(y, x, k, n) : axpy_base(y, x, k, n); }
#undef CML_DOT_BODY
#undef CML_AXPY_BODY

// Row `row` of a gathered copy (F32 or F16), `len` values from `from`, as floats: F16 rows are
// converted into `scratch` (exactly: every F16 value is an F32 one).
const float* row_of(const ggml_tensor* t, int64_t row, int64_t from, int64_t len, std::vector<float>& scratch) {
  const int64_t at = row * t->ne[0] + from;
  if (t->type == GGML_TYPE_F32) return static_cast<const float*>(t->data) + at;
  scratch.resize(len);
  ggml_fp16_to_fp32_row(static_cast<const ggml_fp16_t*>(t->data) + at, scratch.data(), len);
  return scratch.data();
}

}  // namespace

void gathered_lora(ggml_tensor* dst, int ith, int nth, void* userdata) {
  const auto& layout = *static_cast<const AdapterBank::Layout*>(userdata);
  const ggml_tensor *res = dst->src[0], *cur = dst->src[1], *a = dst->src[2], *b = dst->src[3], *mask = dst->src[4];
  const int64_t n_in = cur->ne[0], n_out = res->ne[0], rows = mask->ne[0];  // = layout.rows (all members)
  const int64_t n = ggml_nelements(cur) / n_in;
  const bool by_token = n >= nth;
  const int64_t o0 = by_token ? 0 : n_out * ith / nth, o1 = by_token ? n_out : n_out * (ith + 1) / nth;
  const auto* x = static_cast<const float*>(cur->data);
  const auto* scales = static_cast<const float*>(mask->data);
  auto* out = static_cast<float*>(dst->data);
  std::vector<int64_t> mine;  // this thread's tokens
  for (int64_t t = by_token ? ith : 0; t < n; t += by_token ? nth : 1) {
    mine.push_back(t);
    std::copy_n(static_cast<const float*>(res->data) + t * n_out + o0, o1 - o0, out + t * n_out + o0);
  }
  // Member by member, the tokens that use it: each of its rows of A and B is read once for all of
  // them (and converted once, when F16).
  std::vector<int64_t> group;
  std::vector<float> u, scratch;
  for (const AdapterBank::Segment& s : layout.segments) {
    group.clear();
    for (int64_t t : mine) {
      if (scales[t * rows + s.offset] != 0.0f) group.push_back(t);
    }
    if (group.empty()) continue;
    u.assign(group.size() * s.rank, 0.0f);
    for (int64_t r = 0; r < s.rank; ++r) {
      const float* ar = row_of(a, s.offset + r, 0, n_in, scratch);
      for (size_t j = 0; j < group.size(); ++j) {
        const int64_t t = group[j];
        u[j * s.rank + r] = scales[t * rows + s.offset] * dot(ar, x + t * n_in, n_in);
      }
    }
    for (int64_t r = 0; r < s.rank; ++r) {
      const float* br = row_of(b, s.offset + r, o0, o1 - o0, scratch);
      for (size_t j = 0; j < group.size(); ++j) axpy(out + group[j] * n_out + o0, br, u[j * s.rank + r], o1 - o0);
    }
  }
}

}  // namespace cml

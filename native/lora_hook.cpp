// Our definition of llama.cpp's llm_graph_context::build_lora_mm (see adapter_bank.h for why and
// how it replaces the prebuilt library's), and the bank's side of the graph.
//
// Without a bank in scope it builds what llama.cpp's does: w · cur (times w_s), plus, per adapter
// of the context, scale · B · (A · cur) with scale = s · alpha / rank (s alone without alpha).
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "adapter_bank.h"
#include "llama-graph.h"  // llama.cpp's internal header, of the pinned version (see adapter_bank.h)

namespace cml {

namespace {

thread_local AdapterBank* t_bank = nullptr;
thread_local uint64_t t_calls = 0;

// The bank's masks of one graph, a graph input like llama.cpp's own: llama.cpp calls set_input
// for every batch the graph computes, and reuses the graph only while can_reuse holds.
class BankMasks : public llm_graph_input_i {
 public:
  BankMasks(AdapterBank* bank, int64_t n_tokens, int64_t n_outputs)
      : bank(bank), version(bank->version()), n_tokens(n_tokens), n_outputs(n_outputs) {
    masks.active = bank->graph_key();
  }
  void set_input(const llama_ubatch* ubatch) override { bank->fill_masks(masks, *ubatch); }
  // The graph computes the members it was built for: it serves batches of those alone (one built
  // for base alone, with no deltas, must never serve an adapter).
  bool can_reuse(const llm_graph_params& params) override {
    return bank == t_bank && bank->version() == version && bank->graph_key() == masks.active &&
           static_cast<int64_t>(params.ubatch.n_tokens) == n_tokens &&
           static_cast<int64_t>(params.n_outputs) == n_outputs;
  }

  AdapterBank* const bank;
  const uint64_t version;
  const int64_t n_tokens, n_outputs;
  AdapterBank::MaskSet masks;
};

}  // namespace

BankScope::BankScope(AdapterBank* bank) : prev_(t_bank) { t_bank = bank; }
BankScope::~BankScope() { t_bank = prev_; }
AdapterBank* current_bank() { return t_bank; }
uint64_t lora_hook_calls() { return t_calls; }

AdapterBank::MaskSet* AdapterBank::masks_of(const llm_graph_context& g) {
  for (auto it = g.res->inputs.rbegin(); it != g.res->inputs.rend(); ++it) {
    auto* m = dynamic_cast<BankMasks*>(it->get());
    if (m != nullptr && m->bank == this) return &m->masks;
  }
  auto* m = static_cast<BankMasks*>(g.res->add_input(std::make_unique<BankMasks>(this, g.n_tokens, g.n_outputs)));
  return &m->masks;
}

// The graph's mask matching `key` (created on first use): [rows, cols], F32, a graph input.
ggml_tensor* AdapterBank::mask_for(const llm_graph_context& g, MaskSet& set, MaskSet::Mask key, int64_t rows,
                                   int64_t cols) {
  for (const MaskSet::Mask& m : set.masks) {
    if (m.layout == key.layout && m.outputs == key.outputs && m.first == key.first) return m.t;
  }
  key.t = ggml_new_tensor_2d(g.ctx0, GGML_TYPE_F32, rows, cols);
  ggml_set_input(key.t);
  ggml_format_name(key.t, "bank_mask_%zu", set.masks.size());
  set.masks.push_back(key);
  return key.t;
}

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

// The gathered kernel (adapter_bank.h): dst = res + Σ over each token's own members m of
// B_m (s_m · A_m x), s_m the token's scale (the first value of m's rows in the mask's column).
// src: res [n_out, n], cur [n_in, n], A [n_in, rows], B transposed [n_out, rows], mask [rows, n].
// ggml runs it on every thread: each takes its share of tokens, or with fewer tokens than threads
// its share of output rows.
void gathered_lora(ggml_tensor* dst, int ith, int nth, void* userdata) {
  const auto& layout = *static_cast<const AdapterBank::Layout*>(userdata);
  const ggml_tensor *res = dst->src[0], *cur = dst->src[1], *a = dst->src[2], *b = dst->src[3], *mask = dst->src[4];
  const int64_t n_in = cur->ne[0], n_out = res->ne[0], rows = layout.rows;
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
  // them (from cache after the first).
  std::vector<int64_t> group;
  std::vector<float> u;
  for (const AdapterBank::Segment& s : layout.segments) {
    group.clear();
    for (int64_t t : mine) {
      if (scales[t * rows + s.offset] != 0.0f) group.push_back(t);
    }
    if (group.empty()) continue;
    u.assign(group.size() * s.rank, 0.0f);
    for (int64_t r = 0; r < s.rank; ++r) {
      const float* ar = static_cast<const float*>(a->data) + (s.offset + r) * n_in;
      for (size_t j = 0; j < group.size(); ++j) {
        const int64_t t = group[j];
        u[j * s.rank + r] = scales[t * rows + s.offset] * dot(ar, x + t * n_in, n_in);
      }
    }
    for (int64_t r = 0; r < s.rank; ++r) {
      const float* br = static_cast<const float*>(b->data) + (s.offset + r) * n_out + o0;
      for (size_t j = 0; j < group.size(); ++j) axpy(out + group[j] * n_out + o0, br, u[j * s.rank + r], o1 - o0);
    }
  }
}

}  // namespace

ggml_tensor* AdapterBank::add_delta(const llm_graph_context& g, ggml_tensor* w, ggml_tensor* cur, ggml_tensor* res) {
  auto it = weights_.find(w->name);
  if (it == weights_.end()) return res;  // no member adapts w
  MaskSet& set = *masks_of(g);           // even with no member active: its can_reuse holds the graph to that
  if (set.active == 0) return res;
  // The rows of `cur` are the batch's tokens, or in a last layer only those that give logits.
  const int64_t rows = ggml_nelements(cur) / cur->ne[0];
  if (rows != g.n_tokens && rows != g.n_outputs) {
    fault_ = true;  // nothing to tell the rows' sequences by: the scheduler fails this decode
    return res;
  }
  const Adapted& d = it->second;
  const Layout& layout = layouts_[d.layout];
  // The rows of the members to compute: all (gathered), or the first active's to the last's.
  int64_t first = -1, end = -1;
  for (const Segment& seg : layout.segments) {
    if (!(set.active >> seg.member & 1)) continue;
    if (first < 0) first = seg.offset;
    end = seg.offset + seg.stride;
  }
  if (first < 0) return res;  // no active member adapts w
  MaskSet::Mask key;
  key.layout = d.layout;
  key.outputs = rows != g.n_tokens;
  key.first = first;
  ggml_tensor* mask = mask_for(g, set, key, end - first, rows);
  if (d.gathered) {
    // One node: our kernel on the CPU (its srcs must be plain F32 arrays).
    if (!ggml_is_contiguous(cur)) cur = ggml_cont(g.ctx0, cur);
    if (!ggml_is_contiguous(res)) res = ggml_cont(g.ctx0, res);
    ggml_tensor* args[] = {res, cur, d.a, d.b, mask};
    return ggml_custom_4d(g.ctx0, GGML_TYPE_F32, res->ne[0], res->ne[1], res->ne[2], res->ne[3], args, 5, gathered_lora,
                          GGML_N_TASKS_MAX, const_cast<Layout*>(&layout));
  }
  auto shaped = [&](ggml_tensor* m, ggml_tensor* like) {  // a 3-D `cur` gives 3-D products
    return ggml_n_dims(like) > 2 ? ggml_reshape_3d(g.ctx0, m, m->ne[0], like->ne[1], like->ne[2]) : m;
  };
  ggml_tensor* a = d.a;
  ggml_tensor* b = d.b;
  if (first > 0 || end < layout.rows) {
    a = ggml_view_2d(g.ctx0, d.a, d.a->ne[0], end - first, d.a->nb[1], first * d.a->nb[1]);
    b = ggml_view_2d(g.ctx0, d.b, end - first, d.b->ne[1], d.b->nb[1], first * ggml_element_size(d.b));
  }
  ggml_tensor* t = ggml_mul_mat(g.ctx0, a, cur);  // [active stacked rows, tokens…]
  t = ggml_mul(g.ctx0, t, shaped(mask, t));
  return ggml_add(g.ctx0, res, ggml_mul_mat(g.ctx0, b, t));
}

}  // namespace cml

ggml_tensor* llm_graph_context::build_lora_mm(ggml_tensor* w, ggml_tensor* cur, ggml_tensor* w_s) const {
  ++cml::t_calls;
  ggml_tensor* res = ggml_mul_mat(ctx0, w, cur);
  if (w_s != nullptr) res = ggml_mul(ctx0, res, w_s);
  if (cml::t_bank != nullptr) return cml::t_bank->add_delta(*this, w, cur, res);
  for (const auto& [adapter, adapter_scale] : *loras) {
    const llama_adapter_lora_weight* lw = adapter->get_weight(w);
    if (lw == nullptr) continue;
    ggml_tensor* delta = ggml_mul_mat(ctx0, lw->b, ggml_mul_mat(ctx0, lw->a, cur));
    res = ggml_add(ctx0, res, ggml_scale(ctx0, delta, lw->get_scale(adapter->alpha, adapter_scale)));
  }
  return res;
}

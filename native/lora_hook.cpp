// Our definition of llama.cpp's llm_graph_context::build_lora_mm (see adapter_bank.h for why and
// how it replaces the prebuilt library's), and the bank's side of the graph.
//
// Without a bank in scope it builds what llama.cpp's does: w · cur (times w_s), plus, per adapter
// of the context, scale · B · (A · cur) with scale = s · alpha / rank (s alone without alpha).
#include <memory>

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
  BankMasks(AdapterBank* bank, const AdapterBank::MaskSet& range, int64_t n_tokens, int64_t n_outputs)
      : bank(bank), version(bank->version()), n_tokens(n_tokens), n_outputs(n_outputs), masks(range) {}
  void set_input(const llama_ubatch* ubatch) override { bank->fill_masks(masks, *ubatch); }
  // The graph computes its active range's rows only: it serves batches of that range alone (one
  // built for base alone, with no deltas, must never serve an adapter).
  bool can_reuse(const llm_graph_params& params) override {
    const AdapterBank::MaskSet now = bank->active_range();
    return bank == t_bank && bank->version() == version && now.lo == masks.lo && now.hi == masks.hi &&
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
  auto* m = static_cast<BankMasks*>(
      g.res->add_input(std::make_unique<BankMasks>(this, active_range(), g.n_tokens, g.n_outputs)));
  return &m->masks;
}

ggml_tensor* AdapterBank::add_delta(const llm_graph_context& g, ggml_tensor* w, ggml_tensor* cur, ggml_tensor* res) {
  auto it = weights_.find(w->name);
  if (it == weights_.end()) return res;  // no member adapts w
  MaskSet& set = *masks_of(g);           // even when nothing is active: its can_reuse holds the graph to that
  const Stacked& s = it->second;
  const Layout& layout = layouts_[s.layout];
  // The stacked rows of the active members (consecutive: members are stacked in order).
  int64_t first = -1, end = -1;
  for (const Segment& seg : layout.segments) {
    if (seg.member < set.lo || seg.member > set.hi) continue;
    if (first < 0) first = seg.offset;
    end = seg.offset + seg.stride;
  }
  if (first < 0) return res;  // none of them adapts w
  // The rows of `cur` are the batch's tokens, or in a last layer only those that give logits.
  const int64_t rows = ggml_nelements(cur) / cur->ne[0];
  if (rows != g.n_tokens && rows != g.n_outputs) {
    fault_ = true;  // nothing to tell the rows' sequences by: the scheduler fails this decode
    return res;
  }
  const bool outputs = rows != g.n_tokens;
  auto m = std::find_if(set.masks.begin(), set.masks.end(),
                        [&](const MaskSet::Mask& x) { return x.layout == s.layout && x.outputs == outputs; });
  if (m == set.masks.end()) {
    ggml_tensor* t = ggml_new_tensor_2d(g.ctx0, GGML_TYPE_F32, end - first, rows);
    ggml_set_input(t);
    ggml_format_name(t, "bank_mask_%d_%s", s.layout, outputs ? "out" : "tok");
    set.masks.push_back({s.layout, outputs, first, t});
    m = set.masks.end() - 1;
  }
  ggml_tensor* a = s.a;
  ggml_tensor* b = s.b;
  if (first > 0 || end < layout.rows) {
    a = ggml_view_2d(g.ctx0, s.a, s.a->ne[0], end - first, s.a->nb[1], first * s.a->nb[1]);
    b = ggml_view_2d(g.ctx0, s.b, end - first, s.b->ne[1], s.b->nb[1], first * ggml_element_size(s.b));
  }
  ggml_tensor* t = ggml_mul_mat(g.ctx0, a, cur);  // [active stacked rows, tokens…]
  t = ggml_mul(g.ctx0, t, ggml_n_dims(t) > 2 ? ggml_reshape(g.ctx0, m->t, t) : m->t);
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

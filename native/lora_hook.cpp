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
#include "gathered_lora.h"
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

// Marks a graph built without a bank: never reused for a step with one. (llama.cpp keeps its
// adapter map when a set is applied again, so a graph of a turn with {x at 1} would otherwise
// pass for one of a bank of {x}, and apply x to every token.)
class NoBank : public llm_graph_input_i {
 public:
  void set_input(const llama_ubatch*) override {}
  bool can_reuse(const llm_graph_params&) override { return t_bank == nullptr; }
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
  // The rows of the members to compute: stacked, the first active member's to the last's; gathered,
  // all of them (the kernel skips each token's others; inactive members' scales are 0).
  int64_t first = -1, end = -1;
  for (const Segment& seg : layout.segments) {
    if (!(set.active >> seg.member & 1)) continue;
    if (first < 0) first = seg.offset;
    end = seg.offset + seg.stride;
  }
  if (first < 0) return res;  // no active member adapts w
  if (d.gathered) {
    first = 0;
    end = layout.rows;
  }
  MaskSet::Mask key;
  key.layout = d.layout;
  key.outputs = rows != g.n_tokens;
  key.first = first;
  ggml_tensor* mask = mask_for(g, set, key, end - first, rows);
  if (d.gathered) {
    // One node: our kernel on the CPU (its srcs must be plain F32 arrays), adding in place to the
    // product, which nothing else reads (a copy of it into a new tensor cost a sixth of the kernel).
    if (!ggml_is_contiguous(cur)) cur = ggml_cont(g.ctx0, cur);
    if (!ggml_is_contiguous(res)) res = ggml_cont(g.ctx0, res);
    ggml_tensor* args[] = {cur, d.a, d.b, mask};
    return ggml_custom_inplace(g.ctx0, res, args, 4, gathered_lora, GGML_N_TASKS_MAX, const_cast<Layout*>(&layout));
  }
  auto shaped = [&](ggml_tensor* m, ggml_tensor* like) {  // a 3-D `cur` gives 3-D products
    return ggml_n_dims(like) > 2 ? ggml_reshape_3d(g.ctx0, m, m->ne[0], like->ne[1], like->ne[2]) : m;
  };
  ggml_tensor* b = d.b;
  if (first > 0 || end < layout.rows) {
    b = ggml_view_2d(g.ctx0, d.b, end - first, d.b->ne[1], d.b->nb[1], first * ggml_element_size(d.b));
  }
  ggml_tensor* t = nullptr;  // [active stacked rows, tokens…]
  if (d.group >= 0 && ggml_n_dims(cur) == 2) {
    // One product for the group (all its rows, every member: a GPU pays per kernel, not per row),
    // made by the first of its weights to come with this input; each takes its own rows.
    auto f = std::find_if(set.fused.begin(), set.fused.end(),
                          [&](const MaskSet::Fused& x) { return x.group == d.group && x.cur == cur; });
    if (f == set.fused.end()) {
      set.fused.push_back({d.group, cur, ggml_mul_mat(g.ctx0, fused_a_[d.group], cur)});
      f = set.fused.end() - 1;
    }
    t = ggml_view_2d(g.ctx0, f->product, end - first, f->product->ne[1], f->product->nb[1],
                     (d.group_offset + first) * ggml_element_size(f->product));
  } else {
    ggml_tensor* a = d.a;
    if (first > 0 || end < layout.rows) {
      a = ggml_view_2d(g.ctx0, d.a, d.a->ne[0], end - first, d.a->nb[1], first * d.a->nb[1]);
    }
    t = ggml_mul_mat(g.ctx0, a, cur);
  }
  t = ggml_mul(g.ctx0, t, shaped(mask, t));
  return ggml_add(g.ctx0, res, ggml_mul_mat(g.ctx0, b, t));
}

}  // namespace cml

ggml_tensor* llm_graph_context::build_lora_mm(ggml_tensor* w, ggml_tensor* cur, ggml_tensor* w_s) const {
  ++cml::t_calls;
  ggml_tensor* res = ggml_mul_mat(ctx0, w, cur);
  if (w_s != nullptr) res = ggml_mul(ctx0, res, w_s);
  if (cml::t_bank != nullptr) return cml::t_bank->add_delta(*this, w, cur, res);
  if (loras->empty()) return res;
  auto& inputs = this->res->inputs;  // the graph's (`res` here is the product)
  if (std::none_of(inputs.begin(), inputs.end(),
                   [](const auto& in) { return dynamic_cast<const cml::NoBank*>(in.get()) != nullptr; })) {
    this->res->add_input(std::make_unique<cml::NoBank>());
  }
  for (const auto& [adapter, adapter_scale] : *loras) {
    const llama_adapter_lora_weight* lw = adapter->get_weight(w);
    if (lw == nullptr) continue;
    ggml_tensor* delta = ggml_mul_mat(ctx0, lw->b, ggml_mul_mat(ctx0, lw->a, cur));
    res = ggml_add(ctx0, res, ggml_scale(ctx0, delta, lw->get_scale(adapter->alpha, adapter_scale)));
  }
  return res;
}

// The bank's members, their weights (stacked or their own) and its masks' values (adapter_bank.h).
// The graph side is lora_hook.cpp.
#include "adapter_bank.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>

#include "llama-adapter.h"  // llama.cpp's internal headers: an adapter's tensors, a batch's rows (see adapter_bank.h)
#include "llama-batch.h"
#include "gathered_lora.h"  // the gathered copy of B's layout

namespace cml {

namespace {

bool ends_with(const std::string& s, const char* tail) {
  const size_t n = std::strlen(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

// A tensor's values as floats, wherever it lives (F32, F16, BF16 or a quantized type).
std::vector<float> read_floats(const ggml_tensor* t) {
  std::vector<uint8_t> raw(ggml_nbytes(t));
  ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
  std::vector<float> out(ggml_nelements(t));
  if (t->type == GGML_TYPE_F32) {
    std::memcpy(out.data(), raw.data(), out.size() * sizeof(float));
  } else {
    const auto* traits = ggml_get_type_traits(t->type);
    if (traits->to_float == nullptr) throw std::runtime_error(std::string("cannot read tensor ") + t->name);
    traits->to_float(raw.data(), out.data(), static_cast<int64_t>(out.size()));
  }
  return out;
}

// `values` into `t`, in its type (F32, or F16 for values that came from F16: exact).
void write_floats(ggml_tensor* t, const std::vector<float>& values) {
  if (t->type == GGML_TYPE_F32) {
    ggml_backend_tensor_set(t, values.data(), 0, values.size() * sizeof(float));
    return;
  }
  std::vector<ggml_fp16_t> half(values.size());
  ggml_fp32_to_fp16_row(values.data(), half.data(), static_cast<int64_t>(values.size()));
  ggml_backend_tensor_set(t, half.data(), 0, half.size() * sizeof(ggml_fp16_t));
}

}  // namespace

std::string bank_refusal(const llama_adapter_lora* handle) {
  if (!handle->alora_invocation_tokens.empty()) return "it is an activated LoRA (aLoRA)";
  for (const auto& [name, w] : handle->ab_map) {
    if (ends_with(name, "token_embd.weight")) return "it adapts the token embeddings";
    if (name.find("_exps") != std::string::npos || w.a->ne[2] != 1 || w.b->ne[2] != 1)
      return "it adapts mixture-of-experts weights (" + name + ")";
    if (name.rfind("blk.", 0) != 0 && name != "output.weight") return "it adapts " + name;
  }
  return "";
}

AdapterBank::AdapterBank(int32_t n_seq, int32_t capacity, BankLayout layout)
    : n_seq_(n_seq),
      capacity_(std::min(capacity, 64)),  // active members are bits of a uint64_t
      layout_(layout),
      seq_scales_(n_seq, std::vector<float>(capacity_, 0.0f)) {}

AdapterBank::~AdapterBank() { release(); }

void AdapterBank::release() {
  for (auto* b : bufs_) ggml_backend_buffer_free(b);
  for (auto* c : ctxs_) ggml_free(c);
  bufs_.clear();
  ctxs_.clear();
  weights_.clear();
  layouts_.clear();
  fused_a_.clear();
  bytes_ = 0;
  any_stacked_ = false;
}

bool AdapterBank::covers(const std::vector<AdapterUse>& uses) const {
  for (const auto& u : uses) {
    if (std::none_of(members_.begin(), members_.end(), [&](const auto& m) { return m == u.adapter; })) return false;
  }
  return true;
}

bool AdapterBank::set_members(std::vector<std::shared_ptr<LoadedAdapter>> members) {
  std::sort(members.begin(), members.end(), [](const auto& x, const auto& y) { return x->serial < y->serial; });
  if (members == members_) return false;
  if (static_cast<int32_t>(members.size()) > capacity_) throw std::runtime_error("more adapters than the bank holds");
  for (const auto& m : members) {
    const std::string why = bank_refusal(m->handle);
    if (!why.empty()) throw std::runtime_error("adapter '" + m->name + "' cannot join the bank: " + why);
  }
  release();
  members_.clear();
  ++version_;
  for (auto& row : seq_scales_) std::fill(row.begin(), row.end(), 0.0f);

  // Per adapted weight, the members that adapt it, in member order.
  struct Part {
    int32_t member;
    const llama_adapter_lora_weight* w;
  };
  std::map<std::string, std::vector<Part>> parts;
  for (size_t k = 0; k < members.size(); ++k) {
    for (const auto& [name, w] : members[k]->handle->ab_map) parts[name].push_back({static_cast<int32_t>(k), &w});
  }
  auto factor = [&](const Part& p) {  // llama.cpp's get_scale without the scale
    const float alpha = members[p.member]->handle->alpha;
    return alpha != 0.0f ? alpha / static_cast<float>(p.w->b->ne[0]) : 1.0f;
  };
  // The copies go where the members' own tensors are (llama.cpp put them beside their weight), in
  // F32 whatever the members' types (exact for all). Stacked on a GPU, each member's rows are padded
  // to a multiple of 32, what ggml's own F32 matmul kernels take (else cuBLAS, with conversions), so
  // any range of members stays aligned.
  std::map<ggml_backend_buffer_type_t, ggml_context*> ctx_of;
  auto ctx_for = [&](ggml_backend_buffer_type_t buft) {
    auto it = ctx_of.find(buft);
    if (it != ctx_of.end()) return it->second;
    // Per weight an A (or its view and a share of a group's), a B: 4 leaves room.
    ggml_init_params p{ggml_tensor_overhead() * 4 * (parts.size() + 1), nullptr, /*no_alloc=*/true};
    ggml_context* c = ggml_init(p);
    if (c == nullptr) throw std::runtime_error("cannot allocate the bank's tensor metadata");
    ctxs_.push_back(c);
    return ctx_of[buft] = c;
  };
  for (const auto& [name, ps] : parts) {
    ggml_backend_buffer_type_t buft = ggml_backend_buffer_get_type(ps[0].w->a->buffer);
    const bool host = ggml_backend_buft_is_host(buft);
    // Our kernel runs on the CPU and reads its tensors' memory: a weight on a GPU would have it
    // dereference device pointers (or ggml hand a GPU backend an op it lacks). Refused by name.
    if (layout_ == BankLayout::Gathered && !host) {
      throw std::runtime_error("adapterBankLayout 'gathered' needs its weights in host memory, and " + name +
                               " is in " + ggml_backend_buft_name(buft) + " memory: use 'auto' or 'stacked' there");
    }
    Adapted d;
    d.gathered = layout_ == BankLayout::Gathered || (layout_ == BankLayout::Auto && host);
    any_stacked_ = any_stacked_ || !d.gathered;
    const int64_t pad = host || d.gathered ? 1 : 32;
    Layout layout;
    for (const auto& p : ps) {
      const int64_t rank = p.w->b->ne[0];
      const int64_t stride = (rank + pad - 1) / pad * pad;
      layout.segments.push_back({p.member, layout.rows, rank, stride, factor(p)});
      layout.rows += stride;
    }
    auto same = std::find_if(layouts_.begin(), layouts_.end(),
                             [&](const Layout& l) { return l.rows == layout.rows && l.segments == layout.segments; });
    d.layout = static_cast<int32_t>(same - layouts_.begin());
    if (same == layouts_.end()) layouts_.push_back(layout);
    ggml_context* c = ctx_for(buft);
    const int64_t n_in = ps[0].w->a->ne[0], n_out = ps[0].w->b->ne[1];
    // Gathered copies of F16 members stay F16 (half the bytes a step reads; our kernel converts,
    // exactly); stacked ones, and any mix of types, are F32.
    const bool f16 = d.gathered && std::all_of(ps.begin(), ps.end(), [](const Part& p) {
                       return p.w->a->type == GGML_TYPE_F16 && p.w->b->type == GGML_TYPE_F16;
                     });
    const ggml_type type = f16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
    if (d.gathered) d.a = ggml_new_tensor_2d(c, type, n_in, layout.rows);  // stacked: below, maybe in a group
    d.b = d.gathered ? ggml_new_tensor_2d(c, type, gathered_b_cols(n_out), layout.rows)
                     : ggml_new_tensor_2d(c, type, layout.rows, n_out);
    if (d.a != nullptr) ggml_format_name(d.a, "bank.%s.a", name.c_str());
    ggml_format_name(d.b, "bank.%s.b", name.c_str());
    weights_[name] = d;
  }
  // Stacked A: a layer's q, k and v (and gate and up) in one tensor when they share an input, so
  // that one product serves them all; alone otherwise.
  std::map<std::string, std::vector<std::string>> groups;
  for (const auto& [name, ps] : parts) {
    Adapted& d = weights_[name];
    if (d.gathered) continue;
    const size_t dot = name.find('.', name.find('.') + 1);  // "blk.N." ends there
    const std::string kind = dot == std::string::npos ? "" : name.substr(dot + 1);
    const char* family = kind == "attn_q.weight" || kind == "attn_k.weight" || kind == "attn_v.weight" ? "qkv"
                         : kind == "ffn_gate.weight" || kind == "ffn_up.weight"                        ? "gate_up"
                                                                                                       : nullptr;
    if (name.rfind("blk.", 0) == 0 && family != nullptr) {
      groups[name.substr(0, dot + 1) + family].push_back(name);
    } else {
      groups["alone:" + name].push_back(name);
    }
  }
  for (const auto& [key, names] : groups) {
    const ggml_tensor* first_a = parts[names[0]][0].w->a;
    ggml_context* c = ctx_for(ggml_backend_buffer_get_type(first_a->buffer));
    const int64_t n_in = first_a->ne[0];
    bool fusable = names.size() > 1;
    for (const auto& n : names) {
      const ggml_tensor* a = parts[n][0].w->a;
      fusable = fusable && a->ne[0] == n_in && a->buffer != nullptr &&
                ggml_backend_buffer_get_type(a->buffer) == ggml_backend_buffer_get_type(first_a->buffer);
    }
    if (!fusable) {
      for (const auto& n : names) {
        Adapted& d = weights_[n];
        d.a = ggml_new_tensor_2d(c, GGML_TYPE_F32, n_in, layouts_[d.layout].rows);
        ggml_format_name(d.a, "bank.%s.a", n.c_str());
      }
      continue;
    }
    int64_t rows = 0;
    for (const auto& n : names) rows += layouts_[weights_[n].layout].rows;
    ggml_tensor* fused = ggml_new_tensor_2d(c, GGML_TYPE_F32, n_in, rows);
    ggml_format_name(fused, "bank.%s.a", key.c_str());
    int64_t offset = 0;
    for (const auto& n : names) {
      Adapted& d = weights_[n];
      const int64_t r = layouts_[d.layout].rows;
      d.a = ggml_view_2d(c, fused, n_in, r, fused->nb[1], offset * fused->nb[1]);
      d.group = static_cast<int32_t>(fused_a_.size());
      d.group_offset = offset;
      offset += r;
    }
    fused_a_.push_back(fused);
  }
  for (const auto& [buft, c] : ctx_of) {
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(c, buft);
    if (buf == nullptr) {
      release();
      throw std::runtime_error(std::string("not enough memory for the adapter bank on ") +
                               ggml_backend_buft_name(buft));
    }
    bufs_.push_back(buf);
    bytes_ += ggml_backend_buffer_get_size(buf);
  }
  // Fill: A's rows one member after the other; B's rows (stacked) likewise, or each member's block
  // of B in tiles (gathered, gathered_b_at).
  for (const auto& [name, ps] : parts) {
    const Adapted& d = weights_[name];
    const Layout& layout = layouts_[d.layout];
    const int64_t n_in = d.a->ne[0], rows = layout.rows;
    const int64_t n_out = ps[0].w->b->ne[1], b_cols = d.gathered ? d.b->ne[0] : n_out;
    std::vector<float> a(n_in * rows, 0.0f), b(rows * b_cols, 0.0f);
    for (size_t i = 0; i < ps.size(); ++i) {
      const Segment& seg = layout.segments[i];
      const std::vector<float> pa = read_floats(ps[i].w->a), pb = read_floats(ps[i].w->b);
      std::copy(pa.begin(), pa.end(), a.begin() + seg.offset * n_in);
      for (int64_t j = 0; j < n_out; ++j) {
        for (int64_t k = 0; k < seg.rank; ++k) {
          const float v = pb[j * seg.rank + k];  // B[k, j]: ne0 is the rank
          if (d.gathered) {
            b[seg.offset * b_cols + gathered_b_at(seg.rank, k, j)] = v;
          } else {
            b[j * rows + seg.offset + k] = v;
          }
        }
      }
    }
    write_floats(d.a, a);
    write_floats(d.b, b);
  }
  members_ = std::move(members);
  return true;
}

void AdapterBank::set_sequence(int32_t seq, const std::vector<AdapterUse>& uses) {
  if (seq < 0 || seq >= n_seq_) return;
  std::vector<float>& row = seq_scales_[seq];
  std::fill(row.begin(), row.end(), 0.0f);
  for (const auto& u : uses) {
    for (size_t k = 0; k < members_.size(); ++k) {
      if (members_[k] == u.adapter) row[k] = u.scale;
    }
  }
}

int32_t AdapterBank::member_index(const LoadedAdapter* a) const {
  for (size_t k = 0; k < members_.size(); ++k) {
    if (members_[k].get() == a) return static_cast<int32_t>(k);
  }
  return -1;
}

void AdapterBank::fill_masks(const MaskSet& set, const llama_ubatch& ub) const {
  std::vector<float> data;
  // One column per token (or output row): each active member's rank block holds that token's scale
  // for the member times its alpha / rank, padding and the rest 0 (the gathered kernel reads a
  // block's first value).
  for (const MaskSet::Mask& m : set.masks) {
    if (m.t == nullptr || m.t->buffer == nullptr) continue;  // not allocated: not used by this graph
    const int64_t rows = m.t->ne[0];
    data.assign(ggml_nelements(m.t), 0.0f);
    int64_t col = 0;
    for (uint32_t i = 0; i < ub.n_tokens && col < m.t->ne[1]; ++i) {
      if (m.outputs && ub.output != nullptr && !ub.output[i]) continue;
      const llama_seq_id seq = ub.seq_id[i][0];
      if (seq >= 0 && seq < n_seq_) {
        float* c = data.data() + col * rows;
        for (const Segment& s : layouts_[m.layout].segments) {
          if (!(set.active >> s.member & 1)) continue;
          std::fill_n(c + (s.offset - m.first), s.rank, seq_scales_[seq][s.member] * s.factor);
        }
      }
      ++col;
    }
    ggml_backend_tensor_set(m.t, data.data(), 0, data.size() * sizeof(float));
  }
}

}  // namespace cml

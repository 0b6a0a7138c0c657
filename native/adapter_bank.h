// The adapter bank: requests with different LoRA adapters and scales in one decode.
//
// llama.cpp applies a context's adapters to every token of a batch, with each scale a constant of
// the graph, and rebuilds its compute buffers whenever that set changes. The bank's graph instead
// gives every token its own scale for each member adapter, through a mask (a graph input filled
// per batch), so requests of different members mix in one decode; the graph changes only when a
// member joins or leaves, or (stacked) when a batch uses other members than the last. Per adapted
// weight the members' A and B are copied, stacked along the rank, laid out for one of:
// - stacked (weights on a GPU): B_cat · (mask ⊙ (A_cat · x)) over the rows of the members the batch
//   uses, each token's scale in its members' rank blocks: four kernels per weight however many
//   adapters mix (a GPU's cost is its launches);
// - gathered (weights in host memory): one node per weight, our own kernel (gathered_lora in
//   lora_hook.cpp), that adds to each token's row only its own adapters' B_m (s_m · A_m x): the
//   work follows each token's rank, not the bank's, and the node count stays that of one adapter
//   (on the CPU every node costs a synchronisation of the threads, which dominates small ranks).
//
// It enters llama.cpp's graph through llm_graph_context::build_lora_mm, which our addon defines
// over the prebuilt libllama's (lora_hook.cpp: the library calls it through its PLT, so the first
// definition in the addon's load scope wins). That relies on the pinned llama.cpp's internal
// headers matching its binary, so check_bank() (bank_check.cpp) proves it at load, numerically,
// and the scheduler falls back to taking turns when it fails.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "adapters.h"
#include "ggml-backend.h"
#include "ggml.h"

struct llm_graph_context;
struct llama_ubatch;

namespace cml {

// Why an adapter cannot join a bank ("" when it can): the bank adapts the weights that go
// through build_lora_mm, not token embeddings, mixture-of-experts weights or activated LoRA.
std::string bank_refusal(const llama_adapter_lora* handle);

enum class BankLayout { Auto, Stacked, Gathered };  // Auto: stacked on a GPU, gathered in host memory

class AdapterBank {
 public:
  AdapterBank(int32_t n_seq, int32_t capacity, BankLayout layout = BankLayout::Auto);
  ~AdapterBank();
  AdapterBank(const AdapterBank&) = delete;
  AdapterBank& operator=(const AdapterBank&) = delete;

  int32_t capacity() const { return capacity_; }
  const std::vector<std::shared_ptr<LoadedAdapter>>& members() const { return members_; }
  // Whether every adapter of the set is a member (an empty set always is).
  bool covers(const std::vector<AdapterUse>& uses) const;

  // Makes `members` the bank (at most capacity, none refused by bank_refusal), in serial order (so
  // an adapter's deltas add in the same order whatever joins), and stacks the weights that go
  // stacked: copies every tensor of every member, so only on a change. False when the members are
  // the same already. Throws std::runtime_error (a member's tensor cannot be read, no memory).
  bool set_members(std::vector<std::shared_ptr<LoadedAdapter>> members);

  // The scales sequence `seq` runs with: `uses`' (all members) for their members, 0 for the rest.
  void set_sequence(int32_t seq, const std::vector<AdapterUse>& uses);

  // The members the next batch uses, one bit per member index (0: none, as for base requests
  // alone). Stacked graphs compute the rows of those alone (from the first to the last), gathered
  // ones each token's own; none leaves the deltas out.
  void set_active(uint64_t members) { active_ = members; }
  // What a graph built now is built for: the active members, or for gathered weights alone only
  // whether any is active (their graph serves any mix).
  uint64_t graph_key() const { return any_stacked_ || active_ == 0 ? active_ : ~uint64_t{0}; }
  int32_t member_index(const LoadedAdapter* a) const;  // -1: not a member

  // Changes with every set_members that changed something: what a built graph was built for.
  uint64_t version() const { return version_; }
  size_t bytes() const { return bytes_; }  // of the copies

  // --- The graph side (lora_hook.cpp), on the thread that decodes ---
  // `res` (w · cur) plus the active members' deltas for `w`, for graph `g`.
  ggml_tensor* add_delta(const llm_graph_context& g, ggml_tensor* w, ggml_tensor* cur, ggml_tensor* res);
  // The masks of one graph, and what it was built for.
  struct MaskSet {
    uint64_t active = 0;  // graph_key() when built: the members whose rows the masks fill
    struct Mask {
      int32_t layout = 0;
      bool outputs = false;  // one column per output row (a last layer's), else per token
      int64_t first = 0;     // the stacked row it starts at
      ggml_tensor* t = nullptr;
    };
    std::vector<Mask> masks;
    struct Fused {  // stacked: a group's A · x, computed by its first weight, viewed by the others
      int32_t group = -1;
      const ggml_tensor* cur = nullptr;
      ggml_tensor* product = nullptr;
    };
    std::vector<Fused> fused;
  };
  // Fills one graph's masks for the batch `ub` (BankMasks::set_input in lora_hook.cpp).
  void fill_masks(const MaskSet& set, const llama_ubatch& ub) const;
  // Set when a graph asked for something the bank cannot build (it then added no delta): the
  // decode that built it must not be trusted. Read and cleared by the scheduler after each decode.
  bool take_fault() { return fault_.exchange(false); }

  // A member's rows in a stack, and the stacks' row layouts (read by the gathered kernel too).
  struct Segment {
    int32_t member = 0;  // index into members_
    int64_t offset = 0, rank = 0;
    int64_t stride = 0;   // rows it takes: its rank, padded on a GPU (see set_members)
    float factor = 1.0f;  // alpha / rank, or 1 without alpha (llama.cpp's get_scale)
    bool operator==(const Segment& o) const {
      return member == o.member && offset == o.offset && rank == o.rank && stride == o.stride && factor == o.factor;
    }
  };
  struct Layout {
    std::vector<Segment> segments;
    int64_t rows = 0;  // the stacked rank
  };

 private:
  struct Adapted {
    ggml_tensor* a = nullptr;  // [n_in, rows]: the members' A, one after the other
    // Stacked: F32 [rows, n_out], each row the members' rows of B side by side. Gathered: B
    // transposed, [n_out, rows] (a row of B per stacked row: the kernel adds whole rows); gathered
    // copies are F16 when every member's tensors were, else F32, as stacked ones always are.
    ggml_tensor* b = nullptr;
    int32_t layout = 0;
    bool gathered = false;
    // Stacked q, k and v of a layer (and gate and up) share one A (vLLM's packed modules): `a` is
    // then a view of fused_a_[group] from row group_offset, and one product serves all of them.
    int32_t group = -1;
    int64_t group_offset = 0;
  };
  MaskSet* masks_of(const llm_graph_context& g);
  ggml_tensor* mask_for(const llm_graph_context& g, MaskSet& set, MaskSet::Mask key, int64_t rows, int64_t cols);
  ggml_tensor* gathered_delta(const llm_graph_context& g, const Adapted& d, ggml_tensor* cur, ggml_tensor* res,
                              ggml_tensor* mask);
  void release();

  int32_t n_seq_, capacity_;
  BankLayout layout_;
  std::vector<std::shared_ptr<LoadedAdapter>> members_;
  std::vector<std::vector<float>> seq_scales_;  // [seq][member]
  std::vector<Layout> layouts_;
  std::unordered_map<std::string, Adapted> weights_;  // by the base weight's name
  std::vector<ggml_tensor*> fused_a_;                 // per group: F32 [n_in, the group's rows]
  std::vector<ggml_context*> ctxs_;
  std::vector<ggml_backend_buffer_t> bufs_;
  size_t bytes_ = 0;
  uint64_t version_ = 0;
  uint64_t active_ = 0;
  bool any_stacked_ = false;
  std::atomic<bool> fault_{false};
};

// While one lives on a thread, graphs built there apply LoRA through `bank` (null: through the
// context's adapters, as llama.cpp does). Scopes nest.
class BankScope {
 public:
  explicit BankScope(AdapterBank* bank);
  ~BankScope();

 private:
  AdapterBank* prev_;
};
AdapterBank* current_bank();

// How often our build_lora_mm ran on this thread: the proof that it replaced llama.cpp's.
uint64_t lora_hook_calls();

}  // namespace cml

// The adapter bank: requests with different LoRA adapters and scales in one decode.
//
// llama.cpp applies a context's adapters to every token of a batch, with each scale a constant of
// the graph, and rebuilds its compute buffers whenever that set changes. The bank instead stacks
// the A and B matrices of up to `capacity` adapters along the rank, per adapted weight, and adds
// B_cat · (mask ⊙ (A_cat · x)), where the mask (a graph input, filled per batch) holds each token's
// own scale for each member's rank block and 0 elsewhere. The graph stays the same while requests
// of different members mix; it changes only when a member joins or leaves.
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

class AdapterBank {
 public:
  AdapterBank(int32_t n_seq, int32_t capacity);
  ~AdapterBank();
  AdapterBank(const AdapterBank&) = delete;
  AdapterBank& operator=(const AdapterBank&) = delete;

  int32_t capacity() const { return capacity_; }
  const std::vector<std::shared_ptr<LoadedAdapter>>& members() const { return members_; }
  // Whether every adapter of the set is a member (an empty set always is).
  bool covers(const std::vector<AdapterUse>& uses) const;

  // Makes `members` the bank (at most capacity, none refused by bank_refusal) and stacks their
  // weights: copies every tensor of every member, so only on a change. False when the members
  // are the same already. Throws std::runtime_error (a member's tensor cannot be read, no memory).
  bool set_members(std::vector<std::shared_ptr<LoadedAdapter>> members);

  // The scales sequence `seq` runs with: `uses`' (all members) for their members, 0 for the rest.
  void set_sequence(int32_t seq, const std::vector<AdapterUse>& uses);

  // The members the next batch uses: the range [lo, hi] of member indices that holds them all (lo >
  // hi: none, as for base requests alone). Graphs compute only that range's rows of the stacks, so a
  // step costs what its own adapters cost, not what the whole bank would.
  void set_active(int32_t lo, int32_t hi) {
    active_lo_ = lo;
    active_hi_ = hi;
  }
  int32_t member_index(const LoadedAdapter* a) const;  // -1: not a member

  // Changes with every set_members that changed something: what a built graph was built for.
  uint64_t version() const { return version_; }
  size_t bytes() const { return bytes_; }

  // --- The graph side (lora_hook.cpp), on the thread that decodes ---
  // `res` (w · cur) plus the members' deltas for `w`, for graph `g`.
  ggml_tensor* add_delta(const llm_graph_context& g, ggml_tensor* w, ggml_tensor* cur, ggml_tensor* res);
  // Fills the masks of one graph for the batch `ub` (see BankMasks in lora_hook.cpp).
  struct MaskSet {
    int32_t lo = 0, hi = -1;  // the active range the graph was built for
    struct Mask {
      int32_t layout = 0;
      bool outputs = false;  // one column per output row (a last layer's), else per token
      int64_t first = 0;     // the stacked row it starts at
      ggml_tensor* t = nullptr;
    };
    std::vector<Mask> masks;
  };
  void fill_masks(const MaskSet& set, const llama_ubatch& ub) const;
  MaskSet active_range() const {
    MaskSet m;
    m.lo = active_lo_;
    m.hi = active_hi_;
    return m;
  }
  // Set when a graph asked for something the bank cannot build (it then added no delta): the
  // decode that built it must not be trusted. Read and cleared by the scheduler after each decode.
  bool take_fault() { return fault_.exchange(false); }

 private:
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
  struct Stacked {
    ggml_tensor* a = nullptr;  // F32 [n_in, rows]: the members' A, one after the other
    ggml_tensor* b = nullptr;  // F32 [rows, n_out]: each row the members' rows of B side by side
    int32_t layout = 0;
  };
  MaskSet* masks_of(const llm_graph_context& g);
  void release();

  int32_t n_seq_, capacity_;
  std::vector<std::shared_ptr<LoadedAdapter>> members_;
  std::vector<std::vector<float>> seq_scales_;  // [seq][member]
  std::vector<Layout> layouts_;
  std::unordered_map<std::string, Stacked> weights_;  // by the base weight's name
  std::vector<ggml_context*> ctxs_;
  std::vector<ggml_backend_buffer_t> bufs_;
  size_t bytes_ = 0;
  uint64_t version_ = 0;
  int32_t active_lo_ = 0, active_hi_ = -1;
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

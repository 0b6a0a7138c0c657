// The one thread that owns the llama_context. Each step it gathers one batch from the slots that
// share an adapter set (a token per running stream, prompt chunks from the rest of the batch, in
// sequence order with throwaway tokens in short gaps), decodes once, samples every ready slot and
// hands all the step's events to JS in one call. Requests only post and cancel.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "adapter_bank.h"
#include "llama.h"
#include "request.h"
#include "scheduling_policy.h"
#include "text_stream.h"
#include "worker_pool.h"

namespace cml {

struct SchedulerConfig {
  int32_t n_slots = 4;
  int32_t n_batch = 512;
  int32_t max_queue = 64;    // requests waiting beyond the free slots
  int32_t n_threads = 1;     // threads that sample the slots of one step side by side
  bool prompt_cache = true;  // keep a slot's KV after its request, for a next prompt with the same start
  // Longest run of slots outside a step that is filled with throwaway tokens (0: never). llama.cpp
  // decodes a batch of per-sequence KV streams in one pass only over consecutive sequence ids; each
  // gap costs another pass over the weights, a filler token only its own row.
  int32_t fill_gap = -1;  // -1: 32 on a GPU, 2 on the CPU (the engine decides at load)
  int32_t bank_size = 8;  // adapters in the bank (adapter_bank.h); 0: turns only
  BankLayout bank_layout = BankLayout::Auto;
};

class Scheduler {
 public:
  using Sink = std::function<void(std::vector<Event>&&)>;

  // `bank` (null: none) serves mixed adapter sets in one decode; without one, or for a set it
  // cannot hold, sets take turns.
  Scheduler(llama_model* model, llama_context* ctx, AdapterRegistry* adapters, std::unique_ptr<AdapterBank> bank,
            SchedulerConfig cfg, Sink sink);
  ~Scheduler();  // stops the thread; queued and running requests end with an ENGINE_CLOSED error

  // Returns false when the queue is full.
  bool submit(std::shared_ptr<Request> req);
  bool cancel(uint64_t id);
  void stop();

  int32_t n_ctx_seq() const { return n_ctx_seq_; }
  int32_t queued() const;
  int32_t busy() const { return busy_.load(); }
  // Slots kept out of use until their KV cells are scrubbed (see quarantine()).
  int32_t quarantined() const { return quarantined_.load(); }

  // Where the scheduler thread's time went, summed since it started (readable from any thread):
  // decode includes waiting for the device's results; loop is every working iteration up to the
  // hand-off of its events (counted before it, so a reader that saw an event sees its step).
  // Also counted: throwaway tokens that joined runs of sequences, and changes of adapter set, with
  // the last change's measured cost (what sets the length of a turn).
  // Also counted: requests failed for non-finite logits, and scrubs of the KV cells they left.
  // And the bank now: its members and the bytes their stacked weights take. And how many decodes
  // reused the previous one's graph (llama.cpp's count): the rest built theirs, which costs a step.
  struct Profile {
    int64_t steps, decode_us, sample_us, emit_us, loop_us, filler_tokens, adapter_switches, switch_cost_us, non_finite,
        kv_scrubs, bank_members, bank_bytes, graphs_reused;
  };
  Profile profile() const {
    return {p_steps_.load(),      p_decode_us_.load(), p_sample_us_.load(),    p_emit_us_.load(),
            p_loop_us_.load(),    p_fillers_.load(),   p_switches_.load(),     p_switch_cost_.load(),
            p_non_finite_.load(), p_scrubs_.load(),    p_bank_members_.load(), p_bank_bytes_.load(),
            p_reused_.load()};
  }

 private:
  struct Slot {
    int32_t seq = 0;
    std::shared_ptr<Request> req;
    std::unique_ptr<Sampler> sampler;
    std::unique_ptr<TextStream> text;
    size_t n_prefilled = 0;
    llama_pos n_past = 0;
    llama_token next = -1;  // sampled last step, fed this step
    int32_t n_generated = 0;
    int32_t out_idx = -1;    // row of this slot's logits in the current batch
    int32_t check_idx = -1;  // row of the last token of a prompt chunk that is not the prompt's last
    bool bad = false;        // its logits held a NaN or +inf this step
    // Its cells may hold NaN or inf: out of use until scrub_kv() (a masked cell still enters
    // attention's products, and 0 x NaN is NaN, so a stale poisoned cell spoils the next request).
    bool quarantined = false;
    int32_t take = 0;      // prompt tokens it prefills this step
    bool filler = false;   // holds a throwaway token this step (see policy::plan_step)
    float* row = nullptr;  // those logits, once the decode is done
    llama_token picked = -1;
    LogprobRow logprobs;
    uint64_t last_step = 0;
    int64_t t_prefill_start = 0, t_prefill_end = 0, t_first = 0, t_last = 0;
    // What the slot's KV cells hold, kept after its request ends: a next prompt that starts with
    // the same tokens (a shared template) skips their prefill. Valid for the same adapters only
    // (they change the keys and values), compared by serial: an unloaded adapter's cells never
    // match its reload.
    std::vector<llama_token> kv_tokens;
    AdapterSetKey kv_set;
    int32_t n_cached = 0;
    bool prefilling() const { return n_prefilled < req->prompt.size(); }
  };

  void run();
  void admit(std::vector<Event>& out);
  void step(std::vector<Event>& out);
  void view_slots();
  bool take_turn(bool& switched);
  bool plan_step(int32_t& lo, int32_t& hi);
  void build_batch(int32_t lo, int32_t hi);
  void pick(Slot& s);
  void emit(Slot& s, std::vector<Event>& out);
  void finish(Slot& s, const std::string& reason, std::vector<Event>& out, const std::string& stop = {});
  void fail(Slot& s, const std::string& code, const std::string& message, std::vector<Event>& out);
  void release(Slot& s);
  void forget_kv(Slot& s);
  void fail_non_finite(std::vector<Event>& out);
  void quarantine(Slot& s);
  void scrub_kv();
  std::pair<Slot*, size_t> slot_for(const Request& r);
  void apply_adapters(const Request& r);
  void enter_set(const Request& r);
  bool enter_bank(const Request& r);
  void apply_bank();
  void drop_retired();
  bool in_current_set(const Request& r) const {
    return bank_on_ ? bank_->covers(r.adapters) : r.has_adapters(current_set_);
  }

  llama_context* ctx_;
  const llama_vocab* vocab_;
  AdapterRegistry* adapters_;
  SchedulerConfig cfg_;
  Sink sink_;
  int32_t n_ctx_seq_;
  int32_t n_vocab_;
  std::vector<llama_token> eog_;  // end-of-generation tokens, masked while a slot is under its minimum
  llama_batch batch_;
  std::vector<Slot> slots_;
  // This step's, kept to spare an allocation per step.
  std::vector<Slot*> in_batch_, ready_;
  std::vector<policy::SlotView> views_;
  policy::StepPlan plan_;
  std::unique_ptr<WorkerPool> pool_;  // null with one thread
  uint64_t step_no_ = 0;
  // The adapter set applied to the context, and its turn; or, while bank_on_, the bank's members
  // (every set of them runs at once).
  AdapterSetKey current_set_;
  std::unique_ptr<AdapterBank> bank_;
  bool bank_on_ = false;
  policy::Turns turns_;
  int32_t settle_left_ = 0;  // decodes of this turn still counted into its change's cost
  int64_t settle_us_ = 0;
  int64_t decode_avg_us_ = 0;  // of steps without a change
  int32_t active_ = 0;
  std::atomic<int32_t> busy_{0};
  std::atomic<int32_t> quarantined_{0};
  std::atomic<int64_t> p_steps_{0}, p_decode_us_{0}, p_sample_us_{0}, p_emit_us_{0}, p_loop_us_{0}, p_fillers_{0},
      p_switches_{0}, p_switch_cost_{0}, p_non_finite_{0}, p_scrubs_{0}, p_bank_members_{0}, p_bank_bytes_{0},
      p_reused_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Request>> pending_;
  std::unordered_map<uint64_t, std::shared_ptr<Request>> live_;  // pending or running, for cancel
  bool stopping_ = false;
  std::thread thread_;
};

int64_t now_us();

}  // namespace cml

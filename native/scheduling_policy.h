// The scheduler's decisions as pure functions over plain values: which queued requests start,
// which free slot each takes, whose adapter set runs a step, and what each slot puts in its batch.
// No llama context, no clock, no locks: the scheduler (scheduler.cpp, slots.cpp) gathers the values,
// calls these and carries out the answer, and test/native/scheduling_table.cpp pins them by table.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cml::policy {

// Admission. The queue in arrival order, by each request's cancelled flag: cancelled requests leave
// wherever they stand and take no slot; the rest start from the front, as many as there are free
// slots. Indices into the queue, in order.
struct Admission {
  std::vector<size_t> start, drop;
};
Admission admit(const std::vector<bool>& cancelled, int32_t free_slots);

// Slots a request can start in: neither busy nor quarantined (their cells may hold NaN until the
// scrub). Never below zero.
int32_t free_slots(int32_t n_slots, int32_t active, int32_t quarantined);

// A slot as the prompt cache sees it, for one prompt: whether it can take a request, how many of the
// prompt's first tokens its cells hold (0 for another adapter set) and how many cells it holds.
struct CacheView {
  bool usable = false;
  size_t common = 0;
  size_t kv_len = 0;
};
struct SlotChoice {
  int32_t slot = -1;  // -1: no usable slot
  size_t common = 0;  // shared start with the prompt, of that slot
};
// The usable slot holding the longest start of the prompt; else the one with the least cached, so
// that longer caches stay for prompts that can use them. A start shorter than a tenth of the prompt,
// or one token (the BOS) alone, ranks as none: it saves next to nothing and costs another its cache.
SlotChoice choose_slot(const std::vector<CacheView>& slots, size_t prompt_len);

// A slot as turn-taking and step planning see it, for the adapter set the context has now.
struct SlotView {
  bool busy = false;         // holds a request
  bool in_set = false;       // busy, and its request's adapter set is the context's
  size_t prompt_left = 0;    // prompt tokens not yet prefilled (0: it decodes)
  uint64_t last_step = 0;    // the step it last took part in (0: none since it started)
  bool quarantined = false;  // its cells may hold NaN: never a filler
  size_t kv_len = 0;         // cells it holds (a filler writes the next one)
};

// How long a turn of an adapter set lasts while other sets wait. Changing the set rebuilds
// llama.cpp's compute buffers (1.3-6 ms of CPU on this VM's 60m model, more steps than that on a
// GPU), so a set keeps the context `quantum` steps, or longer, until the last change's cost is a
// tenth of its turn; never past `max_turn_us` (slow CPU steps then alternate sets every step, where a
// change costs little beside them).
struct TurnRules {
  int32_t quantum = 8;
  int64_t max_turn_us = 200000;
};
struct TurnClock {
  int32_t steps_in_set = 0;    // steps the context's set has had in this turn
  int64_t in_turn_us = 0;      // since the turn began
  int64_t switch_cost_us = 0;  // the last change's, measured
};
// The slot whose adapter set runs the next step: one of the context's set while its turn lasts or no
// other set waits, else the longest-waiting slot (the first of equals). -1: no slot is busy.
int32_t next_turn(const std::vector<SlotView>& slots, const TurnClock& clock, const TurnRules& rules = {});

// The turn's bookkeeping around next_turn, with the time given: the scheduler passes the clock's,
// the tables a simulated one.
struct Turns {
  TurnRules rules;
  int32_t steps_in_set = 0;
  int64_t since_us = 0;
  int64_t switch_cost_us = 0;  // set by the scheduler once it has measured a change
  struct Pick {
    int32_t slot = -1;      // -1: no slot is busy (nothing counted)
    bool switched = false;  // the slot's set is not the context's: the context changes to it
  };
  // Picks the set of the step that starts at `now_us` and counts that step into its turn.
  Pick next(const std::vector<SlotView>& slots, int64_t now_us);
};

// One step's batch. `slots` in sequence order, with in_set for the set chosen by next_turn.
// Running streams of the set put one token each; gaps of at most `fill_gap` slots between them get a
// throwaway token each (llama.cpp decodes per-sequence KV streams in one pass only over consecutive
// sequence ids, so each gap costs another pass over the weights, a filler only its own row), in
// slots with a spare cell and clean cells; prompt chunks then take what is left of `n_batch`, in slot
// order, so long prompts never stall running streams.
struct StepPlan {
  int32_t lo = -1, hi = -1;   // first and last sequence of the set (-1: none)
  std::vector<int32_t> take;  // prompt tokens each slot prefills
  std::vector<bool> filler;   // slots that hold a throwaway token
  int32_t n_fillers = 0;
  bool prefill = false;  // some slot prefills
};
// Fills `plan` (reused step after step: no allocation once its vectors have grown).
void plan_step(const std::vector<SlotView>& slots, int32_t n_batch, int32_t fill_gap, size_t n_ctx_seq, StepPlan& plan);

// The adapter bank's members after a change (adapter_bank.h), by adapter serial. `wanted` holds
// adapter sets: first the one that needs the change, then the other busy slots', longest-waiting
// first. Each set joins whole or not at all (half a set serves nobody), in that order, while
// `capacity` allows; then `current` members stay, in their order, while room is left (a member
// kept warm costs nothing until a set that needs its place comes). Empty when the first set alone
// does not fit: it must take a turn of its own.
std::vector<uint64_t> bank_members(const std::vector<uint64_t>& current,
                                   const std::vector<std::vector<uint64_t>>& wanted, size_t capacity);

}  // namespace cml::policy

// Exact tables for the scheduler's policies (native/scheduling_policy.cpp): admission order, the
// prompt cache's choice of slot, turn-taking between adapter sets, and step planning (fillers and
// prompt chunks). Each case names the rule it pins; the comment says which plausible bug it catches.
// doctest (Debian's doctest-dev); built and run by test/native/tables.test.ts.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <map>
#include <vector>

#include "scheduling_policy.h"

using namespace cml::policy;
using Idx = std::vector<size_t>;

TEST_CASE("admission: first come, first served, cancelled requests leave wherever they stand") {
  const Admission fifo = admit({false, false, false, false}, 2);
  CHECK(fifo.start == Idx{0, 1});  // not the newest, not all four
  CHECK(fifo.drop.empty());

  // A cancelled request takes no slot: the next waiting one gets it (a bug that counted the
  // cancelled against the free slots would start only 0).
  const Admission mixed = admit({false, true, false, true, false}, 2);
  CHECK(mixed.start == Idx{0, 2});
  CHECK(mixed.drop == Idx{1, 3});

  // With no free slot nothing starts, and the cancelled still leave (else a cancel waits for a slot).
  const Admission full = admit({false, true, false}, 0);
  CHECK(full.start.empty());
  CHECK(full.drop == Idx{1});
}

TEST_CASE("admission: quarantined slots are not free, and free never goes below zero") {
  CHECK(free_slots(4, 1, 0) == 3);
  CHECK(free_slots(4, 1, 1) == 2);  // a poisoned slot must not take a request before its scrub
  CHECK(free_slots(4, 3, 2) == 0);  // not -1
}

TEST_CASE("prompt cache: the usable slot holding the longest start of the prompt") {
  SlotChoice c = choose_slot({{true, 5, 10}, {true, 8, 20}, {true, 0, 0}}, 20);
  CHECK(c.slot == 1);
  CHECK(c.common == 8);

  // Busy or quarantined slots are skipped, however much they share.
  c = choose_slot({{false, 10, 12}, {true, 3, 3}}, 10);
  CHECK(c.slot == 1);
  CHECK(c.common == 3);

  CHECK(choose_slot({{false, 4, 4}, {false, 0, 0}}, 10).slot == -1);
}

TEST_CASE("prompt cache: a start under a tenth of the prompt, or the BOS alone, ranks as none") {
  // 5 of 100 shared: the slot with the least cached is taken instead, keeping the 50-cell cache.
  SlotChoice c = choose_slot({{true, 5, 50}, {true, 0, 2}}, 100);
  CHECK(c.slot == 1);
  CHECK(c.common == 0);
  // 10 of 100 counts.
  c = choose_slot({{true, 10, 50}, {true, 0, 2}}, 100);
  CHECK(c.slot == 0);
  CHECK(c.common == 10);
  // One shared token (the BOS every prompt starts with) does not count, even on a short prompt.
  c = choose_slot({{true, 1, 30}, {true, 0, 10}}, 5);
  CHECK(c.slot == 1);
  // Equal ranks: the fewer cached cells go (a bug keeping the first would evict the longer cache).
  CHECK(choose_slot({{true, 0, 30}, {true, 0, 10}, {true, 0, 20}}, 40).slot == 1);
}

namespace {

// Slots of sets (-1: idle) as turn-taking sees them when the context holds `current`.
std::vector<SlotView> views(const std::vector<int>& sets, int current, const std::vector<uint64_t>& last_step = {}) {
  std::vector<SlotView> v(sets.size());
  for (size_t i = 0; i < sets.size(); ++i) {
    v[i].busy = sets[i] >= 0;
    v[i].in_set = v[i].busy && sets[i] == current;
    v[i].last_step = i < last_step.size() ? last_step[i] : 0;
  }
  return v;
}

}  // namespace

TEST_CASE("turns: the context's set keeps the context until its turn ends, by steps or by time") {
  // Slot 0 holds set A (the context's), slot 1 set B has waited longer.
  const auto v = views({0, 1}, 0, {9, 2});
  CHECK(next_turn(v, {7, 1000, 0}) == 0);  // 7 of 8 steps: A keeps it
  CHECK(next_turn(v, {8, 1000, 0}) == 1);  // 8 steps: B (a set that never yields would answer 0)
  // A change that cost much buys a longer turn: 8 steps, but only 9x the cost has passed.
  CHECK(next_turn(v, {8, 8999, 1000}) == 0);
  CHECK(next_turn(v, {8, 9000, 1000}) == 1);
  // Never past 200 ms, not even within the first 8 steps, nor for a costly change.
  CHECK(next_turn(v, {2, 199999, 0}) == 0);
  CHECK(next_turn(v, {2, 200000, 0}) == 1);
  CHECK(next_turn(v, {2, 200000, 100000}) == 1);
}

TEST_CASE("turns: with nobody else waiting the set keeps the context; without a busy slot, nobody") {
  CHECK(next_turn(views({-1, 0, 0}, 0, {0, 3, 3}), {100, 10'000'000, 0}) == 1);
  CHECK(next_turn(views({-1, -1}, 0), {}) == -1);
}

TEST_CASE("turns: the next set is the longest-waiting slot's; a slot that has not run yet waits longest") {
  // Turn over (8 steps); B's slot 2 waited since step 3, C's slot 3 since step 5.
  CHECK(next_turn(views({0, 0, 1, 2}, 0, {9, 9, 3, 5}), {8, 0, 0}) == 2);
  // A request just admitted (last step 0) goes before both.
  CHECK(next_turn(views({0, 0, 1, 2}, 0, {9, 9, 3, 0}), {8, 0, 0}) == 3);
  // Equals: the first slot.
  CHECK(next_turn(views({0, 2, 1}, 0, {9, 4, 4}), {8, 0, 0}) == 1);
}

namespace {

// Runs `steps` scheduler steps over slots that each hold an endless request of `sets[i]`, a step
// taking `step_us`, the turn bookkeeping as the scheduler does it (Turns). Returns, per slot, the
// longest run of steps it sat out, and counts the changes of set.
struct Simulated {
  std::vector<int> longest_wait;
  int switches = 0;
  std::vector<int> turn_lengths;  // steps per turn, in order
};
Simulated simulate(const std::vector<int>& sets, int steps, int64_t step_us, int64_t switch_cost_us = 0) {
  Turns turns;
  turns.switch_cost_us = switch_cost_us;
  Simulated r;
  r.longest_wait.assign(sets.size(), 0);
  std::vector<uint64_t> last(sets.size(), 0);
  std::vector<int> waiting(sets.size(), 0);
  int current = -1;
  int64_t now = 0;
  for (int step = 1; step <= steps; ++step, now += step_us) {
    const Turns::Pick p = turns.next(views(sets, current, last), now);
    REQUIRE(p.slot >= 0);
    if (p.switched) {
      current = sets[p.slot];
      ++r.switches;
      r.turn_lengths.push_back(0);
    }
    ++r.turn_lengths.back();
    for (size_t i = 0; i < sets.size(); ++i) {
      if (sets[i] == current) {
        last[i] = step;
        waiting[i] = 0;
      } else {
        r.longest_wait[i] = std::max(r.longest_wait[i], ++waiting[i]);
      }
    }
  }
  return r;
}

}  // namespace

TEST_CASE("fairness: three sets on fast steps take 8-step turns in a ring, none waits more than 16") {
  // Set 0 holds three slots, sets 1 and 2 one each: more slots buys no longer turns.
  const Simulated r = simulate({0, 0, 1, 0, 2}, 240, 1000);
  CHECK(r.switches == 30);
  for (size_t t = 0; t < r.turn_lengths.size(); ++t) CHECK(r.turn_lengths[t] == 8);
  for (int w : r.longest_wait) CHECK(w == 16);
}

TEST_CASE("fairness: slow steps end turns by time (200 ms): 150 ms steps give turns of 2 steps") {
  const Simulated r = simulate({0, 1}, 40, 150'000);
  CHECK(r.switches == 20);
  for (int n : r.turn_lengths) CHECK(n == 2);
  for (int w : r.longest_wait) CHECK(w <= 2);
}

TEST_CASE("fairness: a costly change lengthens turns until it is a tenth of the time, still in a ring") {
  // 1 ms steps, 3 ms per change: a turn lasts while under 27 ms have passed since it began, 27 steps.
  const Simulated r = simulate({0, 1, 2}, 27 * 6, 1000, 3000);
  CHECK(r.switches == 6);
  for (int n : r.turn_lengths) CHECK(n == 27);
  for (int w : r.longest_wait) CHECK(w == 54);
}

namespace {

// A slot of the step's set that decodes (prompt_left 0) or prefills, an idle slot with cached cells,
// a slot of another set.
SlotView running() { return {true, true, 0, 0, false, 10}; }
SlotView prompt(size_t left) { return {true, true, left, 0, false, 0}; }
SlotView idle(size_t kv_len = 5, bool quarantined = false) { return {false, false, 0, 0, quarantined, kv_len}; }
SlotView other() { return {true, false, 0, 0, false, 7}; }

StepPlan plan(const std::vector<SlotView>& slots, int32_t n_batch, int32_t fill_gap, size_t n_ctx_seq = 100) {
  StepPlan p;
  plan_step(slots, n_batch, fill_gap, n_ctx_seq, p);
  return p;
}

using Takes = std::vector<int32_t>;
using Flags = std::vector<bool>;

}  // namespace

TEST_CASE("step plan: the set's running streams, one token each; other sets stay out") {
  const StepPlan p = plan({running(), other(), running()}, 512, 0);
  CHECK(p.lo == 0);
  CHECK(p.hi == 2);
  CHECK(p.take == Takes{0, 0, 0});
  CHECK(p.filler == Flags{false, false, false});
  CHECK_FALSE(p.prefill);
  const StepPlan none = plan({other(), idle()}, 512, 2);
  CHECK(none.lo == -1);
  CHECK(none.hi == -1);
}

TEST_CASE("step plan: gaps of at most fill_gap slots between the set's get throwaway tokens") {
  // A gap of 2 (an idle slot and another set's) with fill_gap 2: both filled.
  StepPlan p = plan({running(), idle(), other(), running()}, 512, 2);
  CHECK(p.filler == Flags{false, true, true, false});
  CHECK(p.n_fillers == 2);
  // fill_gap 1: the gap is too long, none of it is filled (never half of it).
  p = plan({running(), idle(), other(), running()}, 512, 1);
  CHECK(p.filler == Flags{false, false, false, false});
  CHECK(p.n_fillers == 0);
  // fill_gap 0: never.
  CHECK(plan({running(), idle(), running()}, 512, 0).n_fillers == 0);
  // Outside [lo, hi] nothing is filled: it would join no run.
  CHECK(plan({idle(), running(), idle()}, 512, 32).filler == Flags{false, false, false});
  // Two gaps, judged each on its own.
  p = plan({running(), idle(), running(), idle(), idle(), running()}, 512, 1);
  CHECK(p.filler == Flags{false, true, false, false, false, false});
}

TEST_CASE("step plan: no filler in a poisoned slot or one without a spare cell") {
  // A quarantined slot's cells may hold NaN: its gap is left alone, its neighbour too.
  StepPlan p = plan({running(), idle(5, true), idle(), running()}, 512, 4);
  CHECK(p.filler == Flags{false, false, false, false});
  // A slot whose cells fill its share of the context has no cell for the filler.
  p = plan({running(), idle(100), running()}, 512, 4, 100);
  CHECK(p.n_fillers == 0);
  p = plan({running(), idle(99), running()}, 512, 4, 100);
  CHECK(p.n_fillers == 1);
}

TEST_CASE("step plan: prompt chunks take what the streams and fillers leave of the batch, in slot order") {
  // 8 tokens: 1 for the running stream, 5 for the first prompt, the last 2 for the second.
  StepPlan p = plan({running(), prompt(5), prompt(5)}, 8, 0);
  CHECK(p.take == Takes{0, 5, 2});
  CHECK(p.prefill);
  // A filler's token counts: 4 = 1 stream + 1 filler + 2 of the prompt.
  p = plan({prompt(10), idle(), running()}, 4, 1);
  CHECK(p.take == Takes{2, 0, 0});
  CHECK(p.filler == Flags{false, true, false});
  // A prompt of another set waits for its turn.
  p = plan({running(), {true, false, 6, 0, false, 0}}, 512, 0);
  CHECK(p.take == Takes{0, 0});
  CHECK_FALSE(p.prefill);
  // Running streams are never squeezed out by a long prompt: each keeps its token.
  p = plan({prompt(1000), running(), running()}, 16, 0);
  CHECK(p.take == Takes{14, 0, 0});
}

TEST_CASE("step plan: a plan reused step after step holds only this step's answer") {
  StepPlan p;
  plan_step({running(), idle(), running()}, 512, 2, 100, p);
  REQUIRE(p.n_fillers == 1);
  plan_step({prompt(3), running()}, 512, 2, 100, p);
  CHECK(p.filler == Flags{false, false});
  CHECK(p.take == Takes{3, 0});
  CHECK(p.n_fillers == 0);
}

using Serials = std::vector<uint64_t>;

TEST_CASE("bank members: the set that needs the change first, then the busy slots' sets that fit whole") {
  // Room for all: everything wanted joins, in order, and the warm members stay after them.
  CHECK(bank_members({7}, {{1}, {2, 3}}, 8) == Serials{1, 2, 3, 7});
  // A set joins whole or not at all: {2, 3} does not fit beside {1} in 2, but the later {4} does
  // (a bug that took part of {2, 3} would bank a set that still cannot run).
  CHECK(bank_members({}, {{1}, {2, 3}, {4}}, 2) == Serials{1, 4});
  // Adapters shared between sets count once.
  CHECK(bank_members({}, {{1, 2}, {2, 3}}, 3) == Serials{1, 2, 3});
  // The needing set alone past the capacity: no bank can serve it (it takes a turn of its own).
  CHECK(bank_members({1}, {{1, 2, 3}}, 2).empty());
  // The base model (an empty set) always fits; warm members fill what is left, in their order.
  CHECK(bank_members({5, 6, 7}, {{}}, 2) == Serials{5, 6});
  // A current member a busy slot needs stays even when the bank is full of others' wishes.
  CHECK(bank_members({9}, {{1}, {9}}, 2) == Serials{1, 9});
}

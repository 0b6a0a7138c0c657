#include "scheduling_policy.h"

#include <algorithm>

namespace cml::policy {

Admission admit(const std::vector<bool>& cancelled, int32_t free_slots) {
  Admission a;
  for (size_t i = 0; i < cancelled.size(); ++i) {
    if (cancelled[i])
      a.drop.push_back(i);
    else if (static_cast<int32_t>(a.start.size()) < free_slots)
      a.start.push_back(i);
  }
  return a;
}

int32_t free_slots(int32_t n_slots, int32_t active, int32_t quarantined) {
  return std::max(0, n_slots - active - quarantined);
}

SlotChoice choose_slot(const std::vector<CacheView>& slots, size_t prompt_len) {
  SlotChoice best;
  size_t best_rank = 0, best_kv = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    const CacheView& s = slots[i];
    if (!s.usable) continue;
    const size_t rank = s.common >= 2 && s.common * 10 >= prompt_len ? s.common : 0;
    if (best.slot < 0 || rank > best_rank || (rank == best_rank && s.kv_len < best_kv)) {
      best = {static_cast<int32_t>(i), s.common};
      best_rank = rank;
      best_kv = s.kv_len;
    }
  }
  return best;
}

int32_t next_turn(const std::vector<SlotView>& slots, const TurnClock& clock, const TurnRules& rules) {
  int32_t lead = -1;     // the longest-waiting slot
  int32_t current = -1;  // the first slot of the context's set
  bool others = false;   // a slot of another set waits
  for (size_t i = 0; i < slots.size(); ++i) {
    const SlotView& s = slots[i];
    if (!s.busy) continue;
    if (lead < 0 || s.last_step < slots[lead].last_step) lead = static_cast<int32_t>(i);
    if (s.in_set) {
      if (current < 0) current = static_cast<int32_t>(i);
    } else {
      others = true;
    }
  }
  const bool turn_left = clock.in_turn_us < rules.max_turn_us &&
                         (clock.steps_in_set < rules.quantum || clock.in_turn_us < 9 * clock.switch_cost_us);
  return current >= 0 && (turn_left || !others) ? current : lead;
}

Turns::Pick Turns::next(const std::vector<SlotView>& slots, int64_t now_us) {
  Pick p;
  p.slot = next_turn(slots, {steps_in_set, now_us - since_us, switch_cost_us}, rules);
  if (p.slot < 0) return p;
  p.switched = !slots[p.slot].in_set;
  if (p.switched) {
    steps_in_set = 0;
    since_us = now_us;
  }
  ++steps_in_set;
  return p;
}

void plan_step(const std::vector<SlotView>& slots, int32_t n_batch, int32_t fill_gap, size_t n_ctx_seq,
               StepPlan& plan) {
  const int32_t n = static_cast<int32_t>(slots.size());
  plan.take.assign(n, 0);
  plan.filler.assign(n, false);
  plan.lo = plan.hi = -1;
  plan.n_fillers = 0;
  plan.prefill = false;
  int32_t budget = n_batch;
  for (int32_t i = 0; i < n; ++i) {
    if (!slots[i].in_set) continue;
    if (plan.lo < 0) plan.lo = i;
    plan.hi = i;
    if (slots[i].prompt_left == 0) --budget;
  }
  // A gap slot needs a spare cell for its throwaway token: a live request never fills its last cell
  // (its last token is not decoded), and an idle slot's cached cells end with a request's.
  for (int32_t i = plan.lo + 1; i < plan.hi && fill_gap > 0;) {
    if (slots[i].in_set) {
      ++i;
      continue;
    }
    int32_t j = i;
    while (j < plan.hi && !slots[j].in_set) ++j;
    bool room = j - i <= fill_gap;
    for (int32_t k = i; k < j && room; ++k) room = !slots[k].quarantined && slots[k].kv_len < n_ctx_seq;
    if (room) {
      for (int32_t k = i; k < j; ++k) plan.filler[k] = true;
      budget -= j - i;
      plan.n_fillers += j - i;
    }
    i = j;
  }
  for (int32_t i = 0; i < n && budget > 0; ++i) {
    if (!slots[i].in_set || slots[i].prompt_left == 0) continue;
    plan.take[i] = static_cast<int32_t>(std::min<size_t>(budget, slots[i].prompt_left));
    budget -= plan.take[i];
    plan.prefill = true;
  }
}

std::vector<uint64_t> bank_members(const std::vector<uint64_t>& current,
                                   const std::vector<std::vector<uint64_t>>& wanted, size_t capacity) {
  std::vector<uint64_t> out;
  auto has = [&out](uint64_t a) { return std::find(out.begin(), out.end(), a) != out.end(); };
  for (size_t i = 0; i < wanted.size(); ++i) {
    size_t extra = 0;
    for (size_t k = 0; k < wanted[i].size(); ++k) {
      const bool repeat = std::find(wanted[i].begin(), wanted[i].begin() + k, wanted[i][k]) != wanted[i].begin() + k;
      if (!has(wanted[i][k]) && !repeat) ++extra;
    }
    if (out.size() + extra > capacity) {
      if (i == 0) return {};
      continue;
    }
    for (uint64_t a : wanted[i]) {
      if (!has(a)) out.push_back(a);
    }
  }
  for (uint64_t a : current) {
    if (out.size() < capacity && !has(a)) out.push_back(a);
  }
  return out;
}

}  // namespace cml::policy

// The slots' life cycle on the scheduler thread: admitting queued requests into free slots (with
// the prompt cache: which free slot, and how much of its KV to keep), and ending requests.
#include "scheduler.h"
#include "error_codes.h"

#include <algorithm>

namespace cml {

void Scheduler::admit(std::vector<Event>& out) {
  std::vector<std::shared_ptr<Request>> admitted;
  {
    std::lock_guard<std::mutex> lk(mu_);
    // Cancelled requests leave the queue wherever they stand (policy::admit).
    std::vector<bool> cancelled(pending_.size());
    for (size_t i = 0; i < pending_.size(); ++i) {
      const Request& r = *pending_[i];
      cancelled[i] = r.cancelled;
      if (!r.cancelled) continue;
      Event e;
      e.id = r.id;
      e.kind = EventKind::Done;
      e.stop_reason = "cancelled";
      e.prompt_tokens = static_cast<int32_t>(r.prompt.size());
      out.push_back(std::move(e));
      live_.erase(r.id);
    }
    const policy::Admission plan =
        policy::admit(cancelled, policy::free_slots(cfg_.n_slots, active_, quarantined_.load()));
    for (size_t i : plan.start) admitted.push_back(std::move(pending_[i]));
    for (size_t i : plan.drop) pending_[i].reset();
    pending_.erase(std::remove(pending_.begin(), pending_.end(), nullptr), pending_.end());
    busy_.fetch_add(static_cast<int32_t>(admitted.size()));  // with the pop, so submit() never sees room twice
  }
  // Samplers are built outside the lock: feeding a long prompt to the penalties takes a while.
  for (auto& r : admitted) {
    const auto [slot, common] = slot_for(*r);
    Slot& s = *slot;
    s.req = std::move(r);
    s.sampler = std::make_unique<Sampler>(s.req->sampling, n_vocab_);
    s.sampler->accept_prompt(s.req->prompt);
    if (s.req->grammar) s.sampler->set_grammar(s.req->grammar.release(), vocab_);
    s.text = std::make_unique<TextStream>(s.req->stops);
    // Reuse the cells that hold this prompt's start; at least its last token is decoded again,
    // for the logits of the first new token.
    const size_t keep = std::min(common, s.req->prompt.size() - 1);
    if (keep < s.kv_tokens.size() || s.kv_tokens.empty()) {
      llama_memory_seq_rm(llama_get_memory(ctx_), s.seq, static_cast<llama_pos>(keep), -1);
      s.kv_tokens.resize(keep);
    }
    s.kv_set = s.req->adapter_key();
    s.n_cached = static_cast<int32_t>(keep);
    s.n_prefilled = keep;
    s.n_past = static_cast<llama_pos>(keep);
    s.n_generated = 0;
    s.bad = false;
    s.check_idx = -1;
    s.next = -1;
    s.last_step = 0;
    s.t_prefill_start = s.t_prefill_end = s.t_first = s.t_last = 0;
    ++active_;
  }
}

// The free slot for a prompt (policy::choose_slot), and how many of its first tokens its cells hold.
std::pair<Scheduler::Slot*, size_t> Scheduler::slot_for(const Request& r) {
  std::vector<policy::CacheView> views(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    policy::CacheView& v = views[i];
    v.usable = !s.req && !s.quarantined;
    v.kv_len = s.kv_tokens.size();
    if (!v.usable || !cfg_.prompt_cache || !r.has_adapters(s.kv_set)) continue;
    const size_t n = std::min(s.kv_tokens.size(), r.prompt.size());
    while (v.common < n && s.kv_tokens[v.common] == r.prompt[v.common]) ++v.common;
  }
  const policy::SlotChoice c = policy::choose_slot(views, r.prompt.size());
  return {&slots_[c.slot], c.common};  // admit() never takes more requests than there are free slots
}

void Scheduler::forget_kv(Slot& s) {
  llama_memory_seq_rm(llama_get_memory(ctx_), s.seq, -1, -1);
  s.kv_tokens.clear();
  s.kv_set.clear();
}

// The step's slots whose logits went non-finite fail, and every stream the step wrote into may now
// hold NaN or inf: theirs, and the idle slots that took throwaway tokens beside them.
void Scheduler::fail_non_finite(std::vector<Event>& out) {
  for (auto& s : slots_) {
    if (s.req && s.bad) {
      ++p_non_finite_;
      fail(s, code::NON_FINITE,
           "the model's output for this request became NaN or infinite (its adapter scale or the weights overflow "
           "float arithmetic); the request was stopped and other requests are unaffected",
           out);
      quarantine(s);
    } else if (!s.req && s.filler) {
      quarantine(s);
    }
    s.bad = false;
  }
}

void Scheduler::quarantine(Slot& s) {
  forget_kv(s);
  if (!s.quarantined) {
    s.quarantined = true;
    ++quarantined_;
  }
}

// llama.cpp can clear cell data only for the whole memory, so this waits until no slot runs.
void Scheduler::scrub_kv() {
  llama_memory_clear(llama_get_memory(ctx_), /*data=*/true);
  for (auto& s : slots_) {
    s.kv_tokens.clear();
    s.kv_set.clear();
    s.quarantined = false;
  }
  quarantined_ = 0;
  ++p_scrubs_;
}

void Scheduler::finish(Slot& s, const std::string& reason, std::vector<Event>& out, const std::string& stop) {
  Event e;
  e.id = s.req->id;
  e.kind = EventKind::Done;
  e.text = s.text->flush();
  e.stop_reason = reason;
  e.stop_string = stop;
  e.prompt_tokens = static_cast<int32_t>(s.req->prompt.size());
  e.cached_tokens = s.n_cached;
  e.generated_tokens = s.n_generated;
  const int64_t end = now_us();
  if (s.t_prefill_end > 0) e.prefill_ms = (s.t_prefill_end - s.t_prefill_start) / 1000.0;
  if (s.t_first > 0) e.ttft_ms = (s.t_first - s.req->t_submit_us) / 1000.0;
  if (s.n_generated > 1 && s.t_last > s.t_first) e.decode_tps = (s.n_generated - 1) * 1e6 / (s.t_last - s.t_first);
  e.total_ms = (end - s.req->t_submit_us) / 1000.0;
  out.push_back(std::move(e));
  release(s);
}

void Scheduler::fail(Slot& s, const std::string& code, const std::string& message, std::vector<Event>& out) {
  Event e;
  e.id = s.req->id;
  e.kind = EventKind::Error;
  e.code = code;
  e.message = message;
  out.push_back(std::move(e));
  release(s);
}

void Scheduler::release(Slot& s) {
  if (!cfg_.prompt_cache) forget_kv(s);
  {
    std::lock_guard<std::mutex> lk(mu_);
    live_.erase(s.req->id);
  }
  s.req.reset();  // drops adapter references; unloaded adapters are reaped next loop
  s.sampler.reset();
  s.text.reset();
  --active_;
  busy_.fetch_sub(1);
}

}  // namespace cml

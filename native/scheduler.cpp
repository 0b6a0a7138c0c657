#include "scheduler.h"
#include "error_codes.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace cml {

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Scheduler::Scheduler(llama_model* model, llama_context* ctx, AdapterRegistry* adapters,
                     std::unique_ptr<AdapterBank> bank, SchedulerConfig cfg, Sink sink)
    : ctx_(ctx),
      vocab_(llama_model_get_vocab(model)),
      adapters_(adapters),
      cfg_(cfg),
      sink_(std::move(sink)),
      n_ctx_seq_(static_cast<int32_t>(llama_n_ctx_seq(ctx))),
      n_vocab_(llama_vocab_n_tokens(llama_model_get_vocab(model))) {
  bank_ = std::move(bank);
  bank_on_ = bank_ != nullptr;  // with no members: the base model, as an empty context
  for (llama_token t = 0; t < n_vocab_; ++t) {
    if (llama_vocab_is_eog(vocab_, t)) eog_.push_back(t);
  }
  batch_ = llama_batch_init(std::max(cfg_.n_batch, cfg_.n_slots), 0, 1);
  slots_.resize(cfg_.n_slots);
  for (int32_t i = 0; i < cfg_.n_slots; ++i) slots_[i].seq = i;
  const int32_t helpers = std::min(cfg_.n_threads, cfg_.n_slots);
  if (helpers > 1) pool_ = std::make_unique<WorkerPool>(helpers);
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  stop();
  llama_batch_free(batch_);
}

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Scheduler::submit(std::shared_ptr<Request> req) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return false;
    const int32_t free_slots = cfg_.n_slots - busy_.load() - quarantined_.load();
    if (static_cast<int32_t>(pending_.size()) >= free_slots + cfg_.max_queue) return false;
    live_[req->id] = req;
    pending_.push_back(std::move(req));
  }
  cv_.notify_one();
  return true;
}

bool Scheduler::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = live_.find(id);
    if (it == live_.end()) return false;
    it->second->cancelled = true;
  }
  cv_.notify_one();
  return true;
}

int32_t Scheduler::queued() const {
  std::lock_guard<std::mutex> lk(mu_);
  return static_cast<int32_t>(pending_.size());
}

void Scheduler::run() {
  for (;;) {
    std::vector<Event> events;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !pending_.empty() || active_ > 0; });
      if (stopping_) break;
    }
    const int64_t t_loop = now_us();
    if (bank_on_) drop_retired();
    if (adapters_->has_garbage()) {
      llama_set_adapters_lora(ctx_, nullptr, 0, nullptr);  // the context must not point at freed adapters
      adapters_->reap();
      current_set_.clear();
      if (bank_on_) apply_bank();  // its members are alive: it holds them
    }
    admit(events);
    for (auto& s : slots_) {
      if (s.req && s.req->cancelled) finish(s, "cancelled", events);
    }
    if (active_ > 0) step(events);
    // Poisoned cells are scrubbed as soon as nothing runs: at once with one slot (a CML replica),
    // and under load when the other slots next drain (all of them poisoned means none runs).
    if (quarantined_.load() > 0 && active_ == 0) scrub_kv();
    // Counted before the events go out, so whoever reads the profile after an event sees its step.
    p_loop_us_ += now_us() - t_loop;
    if (!events.empty()) sink_(std::move(events));
  }

  std::vector<Event> events;
  for (auto& s : slots_) {
    if (s.req) fail(s, code::ENGINE_CLOSED, "the engine was closed", events);
  }
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& r : pending_) {
    Event e;
    e.id = r->id;
    e.kind = EventKind::Error;
    e.code = code::ENGINE_CLOSED;
    e.message = "the engine was closed";
    events.push_back(std::move(e));
  }
  pending_.clear();
  live_.clear();
  if (!events.empty()) sink_(std::move(events));
}

void Scheduler::apply_adapters(const Request& r) {
  std::vector<llama_adapter_lora*> handles;
  std::vector<float> scales;
  for (const auto& u : r.adapters) {
    handles.push_back(u.adapter->handle);
    scales.push_back(u.scale);
  }
  llama_set_adapters_lora(ctx_, handles.empty() ? nullptr : handles.data(), handles.size(),
                          scales.empty() ? nullptr : scales.data());
}

// The bank's members are the context's adapters, at scale 1: llama.cpp then sizes its graph and
// buffers for them and rebuilds them when they change; the scales come from the masks.
void Scheduler::apply_bank() {
  std::vector<llama_adapter_lora*> handles;
  for (const auto& m : bank_->members()) handles.push_back(m->handle);
  std::vector<float> ones(handles.size(), 1.0f);
  llama_set_adapters_lora(ctx_, handles.empty() ? nullptr : handles.data(), handles.size(),
                          ones.empty() ? nullptr : ones.data());
  p_bank_members_ = static_cast<int64_t>(handles.size());
  p_bank_bytes_ = static_cast<int64_t>(bank_->bytes());
}

// Makes the bank hold r's adapters, with those of the other busy slots that fit
// (policy::bank_members). False when r cannot be banked: it then takes a turn of its own.
bool Scheduler::enter_bank(const Request& r) {
  if (!bank_) return false;
  for (const auto& u : r.adapters) {
    if (!u.adapter->bank_refusal.empty()) return false;
  }
  std::vector<std::shared_ptr<LoadedAdapter>> known;  // every adapter the answer may name
  auto serials = [&known](const std::vector<AdapterUse>& uses) {
    std::vector<uint64_t> out;
    for (const auto& u : uses) {
      out.push_back(u.adapter->serial);
      known.push_back(u.adapter);
    }
    return out;
  };
  std::vector<std::vector<uint64_t>> wanted{serials(r.adapters)};
  std::vector<const Slot*> waiting;
  for (const Slot& s : slots_) {
    if (!s.req || s.req.get() == &r) continue;
    bool ok = true;
    for (const auto& u : s.req->adapters) ok = ok && u.adapter->bank_refusal.empty();
    if (ok) waiting.push_back(&s);
  }
  std::stable_sort(waiting.begin(), waiting.end(),
                   [](const Slot* a, const Slot* b) { return a->last_step < b->last_step; });
  for (const Slot* s : waiting) wanted.push_back(serials(s->req->adapters));
  std::vector<uint64_t> current;
  for (const auto& m : bank_->members()) {
    if (m->retired) continue;
    current.push_back(m->serial);
    known.push_back(m);
  }
  const std::vector<uint64_t> chosen = policy::bank_members(current, wanted, bank_->capacity());
  if (chosen.empty() && !r.adapters.empty()) return false;
  std::vector<std::shared_ptr<LoadedAdapter>> members;
  for (uint64_t serial : chosen) {
    members.push_back(*std::find_if(known.begin(), known.end(), [&](const auto& a) { return a->serial == serial; }));
  }
  try {
    bank_->set_members(std::move(members));
  } catch (const std::exception&) {
    return false;  // e.g. no memory for the stack: this set takes a turn instead
  }
  apply_bank();
  return true;
}

// The context changes to r's set: into the bank when it can hold it, else a turn of its own.
void Scheduler::enter_set(const Request& r) {
  ++p_switches_;
  if (enter_bank(r)) {
    bank_on_ = true;
    return;
  }
  bank_on_ = false;
  current_set_ = r.adapter_key();
  apply_adapters(r);
}

// Members unloaded or replaced leave the bank once no running request uses them.
void Scheduler::drop_retired() {
  const auto& now = bank_->members();
  if (std::none_of(now.begin(), now.end(), [](const auto& m) { return m->retired.load(); })) return;
  std::vector<std::shared_ptr<LoadedAdapter>> keep;
  for (const auto& m : now) {
    bool used = false;
    for (const Slot& s : slots_) {
      if (!s.req) continue;
      for (const auto& u : s.req->adapters) used = used || u.adapter == m;
    }
    if (used || !m->retired) keep.push_back(m);
  }
  if (keep.size() == now.size()) return;
  try {
    bank_->set_members(std::move(keep));
  } catch (const std::exception&) {
    bank_->set_members({});  // cannot fail: nothing to stack
  }
  apply_bank();
}

// What the policies (scheduling_policy.h) see of the slots, for the set the context has now.
void Scheduler::view_slots() {
  views_.resize(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Slot& s = slots_[i];
    policy::SlotView& v = views_[i];
    v.busy = s.req != nullptr;
    v.in_set = v.busy && in_current_set(*s.req);
    v.prompt_left = v.busy ? s.req->prompt.size() - s.n_prefilled : 0;
    v.last_step = s.last_step;
    v.quarantined = s.quarantined;
    v.kv_len = s.kv_tokens.size();
  }
}

// Adapters are per context, so one step serves one adapter set, in turns (policy::next_turn).
// False when no slot is busy.
bool Scheduler::take_turn(bool& switched) {
  view_slots();
  const policy::Turns::Pick pick = turns_.next(views_, now_us());
  if (pick.slot < 0) return false;
  switched = pick.switched;
  if (switched) {
    enter_set(*slots_[pick.slot].req);  // only on a change: the context always mirrors current_set_ or the bank
    view_slots();
  }
  ++step_no_;
  return true;
}

// Which slots take part in this step and how (policy::plan_step). Sets [lo, hi], the range of
// sequences the batch spans; true when it prefills.
bool Scheduler::plan_step(int32_t& lo, int32_t& hi) {
  policy::plan_step(views_, cfg_.n_batch, cfg_.fill_gap, static_cast<size_t>(n_ctx_seq_), plan_);
  for (size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].out_idx = -1;
    slots_[i].take = plan_.take[i];
    slots_[i].filler = plan_.filler[i];
  }
  p_fillers_ += plan_.n_fillers;
  lo = plan_.lo;
  hi = plan_.hi;
  return plan_.prefill;
}

// The planned batch, in sequence order: llama.cpp splits it at every break in the run of ids.
void Scheduler::build_batch(int32_t lo, int32_t hi) {
  const int64_t now = now_us();
  batch_.n_tokens = 0;
  auto add = [&](llama_token t, llama_pos pos, int32_t seq, bool logits) {
    const int32_t i = batch_.n_tokens++;
    batch_.token[i] = t;
    batch_.pos[i] = pos;
    batch_.n_seq_id[i] = 1;
    batch_.seq_id[i][0] = seq;
    batch_.logits[i] = logits;
    return i;
  };
  in_batch_.clear();
  for (int32_t i = std::max(lo, 0); i <= hi; ++i) {
    Slot& s = slots_[i];
    if (bank_on_ && s.req && !s.filler) bank_->set_sequence(s.seq, s.req->adapters);
    if (s.filler) {
      add(0, static_cast<llama_pos>(s.kv_tokens.size()), s.seq, false);
    } else if (s.req && in_current_set(*s.req) && !s.prefilling()) {
      s.out_idx = add(s.next, s.n_past++, s.seq, true);
      s.kv_tokens.push_back(s.next);
      in_batch_.push_back(&s);
    } else if (s.take > 0) {
      if (s.t_prefill_start == 0) s.t_prefill_start = now;
      for (int32_t k = 0; k < s.take; ++k) {
        const bool last = s.n_prefilled + 1 == s.req->prompt.size();
        // A chunk's last token attends to every cell before it: its logits show whether any of
        // them went non-finite, before a cancel could leave them behind unchecked.
        const bool chunk_end = k + 1 == s.take;
        s.kv_tokens.push_back(s.req->prompt[s.n_prefilled]);
        const int32_t idx = add(s.req->prompt[s.n_prefilled++], s.n_past++, s.seq, last || chunk_end);
        if (last)
          s.out_idx = idx;
        else if (chunk_end)
          s.check_idx = idx;
      }
      in_batch_.push_back(&s);
    }
  }
}

void Scheduler::step(std::vector<Event>& out) {
  bool switched = false;
  if (!take_turn(switched)) return;
  int32_t lo = -1, hi = -1;
  const bool prefill = plan_step(lo, hi);
  build_batch(lo, hi);
  const std::vector<Slot*>& in_batch = in_batch_;

  const int64_t t_decode = now_us();
  int32_t rc = 0;
  if (bank_on_) {  // the members this batch uses: the graph computes only theirs
    uint64_t active = 0;
    for (const Slot* s : in_batch) {
      for (const auto& u : s->req->adapters) {
        const int32_t k = bank_->member_index(u.adapter.get());  // a member: the batch holds covered sets only
        if (k >= 0) active |= uint64_t{1} << k;
      }
    }
    bank_->set_active(active);
  }
  {
    BankScope scope(bank_on_ ? bank_.get() : nullptr);
    rc = llama_decode(ctx_, batch_);
  }
  p_reused_ = llama_perf_context(ctx_).n_reused;
  if (bank_on_ && bank_->take_fault()) {
    // A graph the bank could not build: its rows are not what the requests asked for. Nothing
    // of this decode goes out, and from now on sets take turns.
    rc = -100;
    bank_on_ = false;
    llama_set_adapters_lora(ctx_, nullptr, 0, nullptr);
    bank_.reset();  // its members become garbage, reaped next loop
    p_bank_members_ = 0;
    p_bank_bytes_ = 0;
    current_set_.clear();
  }
  for (int32_t i = std::max(lo, 0); i <= hi; ++i) {  // the fillers' cells go, whatever the decode did
    if (slots_[i].filler)
      llama_memory_seq_rm(llama_get_memory(ctx_), i, static_cast<llama_pos>(slots_[i].kv_tokens.size()), -1);
  }
  if (rc != 0) {
    const std::string why = rc == 1      ? "no room left in the KV cache"
                            : rc == -100 ? "the adapter bank could not build this model's graph (now off)"
                                         : "llama_decode failed with code " + std::to_string(rc);
    for (Slot* s : in_batch) {
      fail(*s, code::DECODE_FAILED, why, out);
      forget_kv(*s);  // what the failed batch left in the cells is unknown
    }
    return;
  }
  std::vector<Slot*>& ready = ready_;
  ready.clear();
  bool any_bad = false;
  for (Slot* s : in_batch) {
    s->last_step = step_no_;
    if (s->check_idx >= 0) {
      row_max(llama_get_logits_ith(ctx_, s->check_idx), n_vocab_, &s->bad);
      s->check_idx = -1;
      any_bad = any_bad || s->bad;
    }
    if (s->out_idx < 0) continue;
    s->row = llama_get_logits_ith(ctx_, s->out_idx);  // here: it synchronizes the context
    ready.push_back(s);
  }
  const int64_t t_sample = now_us();
  // A change's cost is the excess over the usual decode of the turn's first kSettleSteps decodes:
  // on CUDA the first runs without a CUDA graph and the second captures one. Steps with prompt
  // chunks say nothing about either.
  constexpr int32_t kSettleSteps = 3;
  const int64_t took = t_sample - t_decode;
  if (switched) {
    settle_left_ = kSettleSteps;
    settle_us_ = 0;
  }
  if (!prefill && settle_left_ > 0) {
    settle_us_ += std::max<int64_t>(0, took - decode_avg_us_);
    if (--settle_left_ == 0) p_switch_cost_ = turns_.switch_cost_us = settle_us_;
  } else if (!prefill) {
    decode_avg_us_ = decode_avg_us_ == 0 ? took : (9 * decode_avg_us_ + took) / 10;
  }
  // Slots sample side by side once the step's rows are big enough to pay for waking the pool:
  // from 12 slots with a 32k vocabulary, from 3 with a 128k one (12 x 32000 values). (H200 VM,
  // greedy, 32k: 8 slots took 33 µs alone and 48 on the pool, 16 slots 69 and 60, 64 slots 391 and 133.)
  constexpr int64_t kParallelFromValues = 12 * 32000;
  const int32_t n = static_cast<int32_t>(ready.size());
  if (pool_ && n > 1 && static_cast<int64_t>(n) * n_vocab_ >= kParallelFromValues) {
    pool_->run(n, [&](int32_t i) { pick(*ready[i]); });
  } else {
    for (Slot* s : ready) pick(*s);
  }
  const int64_t t_emit = now_us();
  for (Slot* s : ready) {
    s->bad = s->bad || s->picked < 0;
    any_bad = any_bad || s->bad;
    if (!s->bad) emit(*s, out);
  }
  if (any_bad) fail_non_finite(out);
  p_decode_us_ += t_sample - t_decode;
  p_sample_us_ += t_emit - t_sample;
  p_emit_us_ += now_us() - t_emit;
  ++p_steps_;
}

// Touches only the slot's own row and sampler: safe on any thread, next to other slots.
void Scheduler::pick(Slot& s) {
  // Log-probabilities describe the model, so they are taken before any masking; the picked token
  // is never a masked one, so its logit is still the raw value afterwards.
  if (s.req->sampling.logprobs > 0) s.logprobs = logprob_row(s.row, n_vocab_, s.req->sampling.logprobs);
  if (s.n_generated < s.req->min_new_tokens) {
    for (llama_token t : eog_) s.row[t] = -INFINITY;
  }
  s.picked = s.sampler->sample(s.row);  // -1: the row holds a NaN or +inf
}

void Scheduler::emit(Slot& s, std::vector<Event>& out) {
  const int64_t now = now_us();
  if (s.t_prefill_end == 0) s.t_prefill_end = now;
  const llama_token t = s.picked;
  Event e;
  e.id = s.req->id;
  if (s.req->sampling.logprobs > 0) {
    e.logprobs = std::move(s.logprobs);
    e.logprobs.chosen = s.row[t] - e.logprobs.log_z;
    e.has_logprobs = true;
  }
  if (s.t_first == 0) s.t_first = now;
  s.t_last = now;
  if (llama_vocab_is_eog(vocab_, t)) {
    finish(s, "eos", out);
    return;
  }
  ++s.n_generated;
  e.token = t;
  e.text = s.text->push(token_piece(vocab_, t, /*special=*/false));
  out.push_back(std::move(e));
  s.next = t;
  if (s.text->stopped()) {
    finish(s, "stop", out, s.text->matched_stop());
  } else if (s.n_generated >= s.req->max_new_tokens) {
    finish(s, "length", out);
  }
}

}  // namespace cml

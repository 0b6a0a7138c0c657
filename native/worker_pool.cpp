#include "worker_pool.h"

namespace cml {

WorkerPool::WorkerPool(int32_t n_threads) {
  for (int32_t i = 1; i < n_threads; ++i) threads_.emplace_back([this] { work(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkerPool::drain() {
  for (int32_t i; (i = next_.fetch_add(1)) < n_;) {
    try {
      (*job_)(i);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

// The caller works through the items too and then waits only for the threads that joined in: one
// that wakes after the items are gone leaves the job alone. Waiting for every thread to wake cost
// a step 120-160 µs on a VM (H200), several times the sampling itself at 8 streams.
void WorkerPool::run(int32_t n, const std::function<void(int32_t)>& fn) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &fn;
    n_ = n;
    next_.store(0);
    open_ = true;
    error_ = nullptr;
    ++generation_;
  }
  start_cv_.notify_all();
  drain();
  std::unique_lock<std::mutex> lk(mu_);
  open_ = false;
  done_cv_.wait(lk, [&] { return inside_ == 0; });
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void WorkerPool::work() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      start_cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (!open_) continue;
      ++inside_;
    }
    drain();
    std::lock_guard<std::mutex> lk(mu_);
    if (--inside_ == 0) done_cv_.notify_one();
  }
}

}  // namespace cml

// A few threads the scheduler lends each decode step's per-slot sampling to. At 32 streams and a
// large vocabulary, sampling one slot after another would cost the GPU whole milliseconds per step.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace cml {

class WorkerPool {
 public:
  // n_threads counts the caller of run(), which works too: n_threads - 1 threads are started.
  explicit WorkerPool(int32_t n_threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Calls fn(i) for every i in [0, n) across the pool; returns when all calls have returned, and
  // rethrows the first exception one of them threw.
  void run(int32_t n, const std::function<void(int32_t)>& fn);

 private:
  void work();
  void drain();

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int32_t)>* job_ = nullptr;
  int32_t n_ = 0;
  std::atomic<int32_t> next_{0};
  bool open_ = false;   // the current job still takes threads in
  int32_t inside_ = 0;  // threads working on the current job
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace cml

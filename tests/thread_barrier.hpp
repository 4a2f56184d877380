// A reusable thread barrier for the tests' in-process ranks (std::barrier is C++20). Plain
// C++ (no Eigen), so the nvcc-compiled CUDA test runner uses it too.
#pragma once

#include <condition_variable>
#include <mutex>

namespace mltest {

class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_, waiting_ = 0;
  long generation_ = 0;
};

}  // namespace mltest

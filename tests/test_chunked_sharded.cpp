// Class-chunked and class-sharded evaluation equal the dense path for every policy.
#include <doctest/doctest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "support.hpp"
#include "thread_barrier.hpp"

using namespace mltest;

namespace {


// In-process ranks on threads: all-reduce through a shared buffer and two barriers, summing
// in rank order so every rank gets the same bits (as MPI does).
class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), sync_(size), slots_(static_cast<std::size_t>(size)) {}
  class Comm {
   public:
    Comm(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
    int rank() const { return rank_; }
    int size() const { return g_.size_; }
    template <typename T>
    void allreduce_max(T* data, Index n) { reduce(data, n, true); }
    template <typename T>
    void allreduce_sum(T* data, Index n) { reduce(data, n, false); }

   private:
    template <typename T>
    void reduce(T* data, Index n, bool max) {
      g_.slots_[static_cast<std::size_t>(rank_)].assign(data, data + n);
      g_.sync_.arrive_and_wait();
      for (Index k = 0; k < n; ++k) {
        double acc = g_.slots_[0][static_cast<std::size_t>(k)];
        for (int r = 1; r < g_.size_; ++r) {
          const double v = g_.slots_[static_cast<std::size_t>(r)][static_cast<std::size_t>(k)];
          acc = max ? std::max(acc, v) : acc + v;
        }
        data[k] = static_cast<T>(acc);
      }
      g_.sync_.arrive_and_wait();
    }
    ThreadGroup& g_;
    int rank_;
  };
  int size() const { return size_; }

 private:
  int size_;
  Barrier sync_;
  std::vector<std::vector<double>> slots_;
};

}  // namespace

TEST_CASE("Chunked equals dense to 1e-12 for every policy, block sizes that do not divide C") {
  Case c = random_case(9, 7, 23, 1);
  for_each_policy([&](const auto& policy) {
    CAPTURE(std::string(std::decay_t<decltype(policy)>::name));
    const auto dense = ml::forward_backward(policy, c.X, c.W, c.labels);
    for (Index block : {1, 5, 7, 22}) {
      CAPTURE(block);
      ml::Options o;
      o.class_block = block;
      const auto r = ml::forward_backward(policy, c.X, c.W, c.labels, o);
      CHECK(rel_error(r.loss, dense.loss) < 1e-12);
      CHECK(rel_error(r.dX, dense.dX) < 1e-12);
      CHECK(rel_error(r.dW, dense.dW) < 1e-12);
    }
  });
}

TEST_CASE("Chunked split forward/backward and workspace sizing") {
  Case c = random_case(6, 5, 40, 2);
  const ml::ArcFace<double> p{64, 0.5};
  ml::Options o;
  o.class_block = 16;
  ml::Workspace<double> ws;
  const double loss = ml::forward(p, c.X, c.W, c.labels, ws, o);
  CHECK(ws.class_block() == 16);
  const auto g = ml::backward(p, c.W, ws, 3.0);
  const auto dense = ml::forward_backward(p, c.X, c.W, c.labels);
  CHECK(rel_error(loss, dense.loss) < 1e-12);
  CHECK(rel_error(g.dX, 3.0 * dense.dX) < 1e-12);
  CHECK(rel_error(g.dW, 3.0 * dense.dW) < 1e-12);
  CHECK(ml::Workspace<double>::bytes_required(6, 5, 40, 16) < ml::Workspace<double>::bytes_required(6, 5, 40));
  // Automatic: dense while B x C fits the budget, blocks beyond it.
  o = ml::Options{};
  ml::forward(p, c.X, c.W, c.labels, ws, o);
  CHECK(ws.class_block() == 40);
  Case wide = random_case(2, 3, 600, 5);
  o.memory_budget = 2 * 8 * 200;  // B x 200 doubles: the B x 600 buffer does not fit
  ml::forward(p, wide.X, wide.W, wide.labels, ws, o);
  CHECK(ws.class_block() == 256);  // the budget is below the 256-class minimum
  Case wider = random_case(2, 3, 5000, 6);
  o.memory_budget = 2 * 8 * 5000 - 1;  // just below the dense buffer: blocks within the budget
  ml::forward(p, wider.X, wider.W, wider.labels, ws, o);
  CHECK(ws.class_block() == (2 * 8 * 5000 - 1) / 16);
  Case tall = random_case(2048, 3, 5000, 7);  // B x C = 80 MB of doubles > 64 MiB budget
  o.memory_budget = std::size_t(64) << 20;
  ml::forward(p, tall.X, tall.W, tall.labels, ws, o);
  CHECK(ws.class_block() == (std::size_t(8) << 20) / (2048 * 8));  // about 8 MiB per block
  o.class_block = -1;
  CHECK_THROWS_AS(ml::forward(p, c.X, c.W, c.labels, ws, o), ml::invalid_argument);
}

TEST_CASE("even_class_range covers the classes once") {
  Index next = 0;
  for (int r = 0; r < 4; ++r) {
    const auto range = ml::even_class_range(10, 4, r);
    CHECK(range.offset == next);
    CHECK(range.count == (r < 2 ? 3 : 2));
    next += range.count;
  }
  CHECK(next == 10);
  CHECK_THROWS_AS(ml::even_class_range(10, 4, 4), ml::invalid_argument);
}

TEST_CASE("Sharded over 2, 3 and 4 in-process ranks equals single-process dense, every policy") {
  Case c = random_case(8, 6, 19, 3);
  for_each_policy([&](const auto& policy) {
    using P = std::decay_t<decltype(policy)>;
    CAPTURE(std::string(P::name));
    const auto dense = ml::forward_backward(policy, c.X, c.W, c.labels);
    for (int ranks : {2, 3, 4}) {
      for (Index block : {0, 2}) {
        CAPTURE(ranks);
        CAPTURE(block);
        ThreadGroup group(ranks);
        std::vector<double> loss(static_cast<std::size_t>(ranks));
        std::vector<Mat<double>> dX(static_cast<std::size_t>(ranks));
        Mat<double> dW(c.W.rows(), c.W.cols());
        std::vector<std::thread> threads;
        for (int r = 0; r < ranks; ++r)
          threads.emplace_back([&, r] {
            ThreadGroup::Comm comm(group, r);
            const auto range = ml::even_class_range(c.W.rows(), ranks, r);
            const Mat<double> W_shard = c.W.middleRows(range.offset, range.count);
            Mat<double> dWs(range.count, c.W.cols());
            dX[static_cast<std::size_t>(r)].resize(c.X.rows(), c.X.cols());
            ml::Workspace<double> ws;
            ml::Options o;
            o.class_block = block;
            loss[static_cast<std::size_t>(r)] = ml::sharded_forward_backward(
                policy, c.X, W_shard, range.offset, c.W.rows(), c.labels, comm, dX[static_cast<std::size_t>(r)], dWs, ws, o);
            dW.middleRows(range.offset, range.count) = dWs;
          });
        for (auto& t : threads) t.join();
        for (int r = 0; r < ranks; ++r) {
          CHECK(loss[static_cast<std::size_t>(r)] == loss[0]);  // identical on every rank
          CHECK(dX[static_cast<std::size_t>(r)] == dX[0]);
        }
        CHECK(rel_error(loss[0], dense.loss) < 1e-12);
        CHECK(rel_error(dX[0], dense.dX) < 1e-12);
        CHECK(rel_error(dW, dense.dW) < 1e-12);
      }
    }
  });
}

TEST_CASE("A bad shard makes every rank throw instead of deadlocking") {
  Case c = random_case(4, 5, 8, 4);
  ThreadGroup group(2);
  std::vector<std::string> messages(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      ThreadGroup::Comm comm(group, r);
      const auto range = ml::even_class_range(8, 2, r);
      Mat<double> W_shard = c.W.middleRows(range.offset, range.count);
      if (r == 1) W_shard(0, 0) = std::numeric_limits<double>::quiet_NaN();
      Mat<double> dX(4, 5), dWs(range.count, 5);
      ml::Workspace<double> ws;
      try {
        ml::sharded_forward_backward(ml::CosFace<double>{}, c.X, W_shard, range.offset, 8, c.labels, comm, dX, dWs, ws);
      } catch (const ml::invalid_argument& e) {
        messages[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  CHECK(messages[0].find("another rank rejected its input") != std::string::npos);
  CHECK(messages[1].find("W row 0 contains a non-finite value") != std::string::npos);
}

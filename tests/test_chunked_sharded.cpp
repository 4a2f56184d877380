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

   protected:
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
  // The same ranks with the concept's optional host_allreduce_sum (the one a DeviceCommunicator
  // must have): the error agreement goes through it; it records the length of each call.
  class AgreeingComm : public Comm {
   public:
    using Comm::Comm;
    void host_allreduce_sum(double* data, Index n) {
      lengths.push_back(n);
      reduce(data, n, false);
    }
    std::vector<Index> lengths;
  };
  int size() const { return size_; }

 private:
  int size_;
  Barrier sync_;
  std::vector<std::vector<double>> slots_;
};

// One concept (distributed/communicator.hpp): the in-process ranks, the single-process and the
// MPI communicator are Communicators; a DeviceCommunicator adds stream() and host_allreduce_sum.
static_assert(ml::is_communicator_v<ThreadGroup::Comm> && !ml::is_device_communicator_v<ThreadGroup::Comm>);
static_assert(ml::is_communicator_v<ThreadGroup::AgreeingComm>);
static_assert(ml::is_communicator_v<ml::LocalCommunicator> && ml::is_local_communicator_v<ml::LocalCommunicator>);
static_assert(!ml::is_communicator_v<int> && !ml::is_local_communicator_v<ThreadGroup::Comm>);
static_assert(std::is_base_of_v<std::runtime_error, ml::communication_error> &&
              !std::is_base_of_v<std::invalid_argument, ml::communication_error>);

// Runs call(rank, comm) on `ranks` threads; returns what each rank threw ("" when nothing).
template <typename C, typename F>
std::vector<std::string> on_ranks(int ranks, F&& call) {
  ThreadGroup group(ranks);
  std::vector<std::string> messages(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      C comm(group, r);
      try {
        call(r, comm);
      } catch (const ml::invalid_argument& e) {
        messages[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return messages;
}

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
  const auto fwd = ml::forward(p, c.X, c.W, c.labels, ws, o);
  const double loss = fwd.loss();
  CHECK(ws.class_block() == 16);
  Mat<double> gdX(6, 5), gdW(40, 5);
  ml::backward(fwd, 3.0, {gdX, gdW});
  const auto dense = ml::forward_backward(p, c.X, c.W, c.labels);
  CHECK(rel_error(loss, dense.loss) < 1e-12);
  CHECK(rel_error(gdX, 3.0 * dense.dX) < 1e-12);
  CHECK(rel_error(gdW, 3.0 * dense.dW) < 1e-12);
  CHECK(ml::Workspace<double>::bytes_required(6, 5, 40, 16) < ml::Workspace<double>::bytes_required(6, 5, 40));
  // Automatic: dense while B x C fits the budget, blocks beyond it.
  o = ml::Options{};
  (void)ml::forward(p, c.X, c.W, c.labels, ws, o);
  CHECK(ws.class_block() == 40);
  Case wide = random_case(2, 3, 600, 5);
  o.memory_budget = 2 * 8 * 200;  // B x 200 doubles: the B x 600 buffer does not fit
  (void)ml::forward(p, wide.X, wide.W, wide.labels, ws, o);
  CHECK(ws.class_block() == 256);  // the budget is below the 256-class minimum
  Case wider = random_case(2, 3, 5000, 6);
  o.memory_budget = 2 * 8 * 5000 - 1;  // just below the dense buffer: blocks within the budget
  (void)ml::forward(p, wider.X, wider.W, wider.labels, ws, o);
  CHECK(ws.class_block() == (2 * 8 * 5000 - 1) / 16);
  Case tall = random_case(2048, 3, 5000, 7);  // B x C = 80 MB of doubles > 64 MiB budget
  o.memory_budget = std::size_t(64) << 20;
  (void)ml::forward(p, tall.X, tall.W, tall.labels, ws, o);
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
            loss[static_cast<std::size_t>(r)] =
                ml::forward_backward(policy, c.X, W_shard, c.labels, {dX[static_cast<std::size_t>(r)], dWs}, ws,
                                     ml::Shard{range.offset, c.W.rows(), comm}, o);
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

TEST_CASE("Shard from a ClassRange: the same call as from its offset, and the sharded split forward/backward") {
  // The constructor takes the range's offset (its count is W_shard's rows).
  ml::LocalCommunicator local;
  const ml::ClassRange part{3, 4};
  const ml::Shard from_range(part, 10, local);
  static_assert(std::is_same_v<decltype(from_range), const ml::Shard<ml::LocalCommunicator>>);
  CHECK(from_range.offset == 3);
  CHECK(from_range.num_classes == 10);
  CHECK(&from_range.comm == &local);

  Case c = random_case(7, 5, 10, 12);
  const ml::ArcFace<double> policy{64, 0.5};
  const auto dense = ml::forward_backward(policy, c.X, c.W, c.labels);
  const int ranks = 3;
  const auto n = static_cast<std::size_t>(ranks);
  std::vector<double> by_range(n), by_offset(n), split(n);
  std::vector<Mat<double>> dX_range(n), dX_offset(n), dX_split(n);
  Mat<double> dW_range(c.W.rows(), c.W.cols()), dW_offset(dW_range), dW_split(dW_range);
  const auto messages = on_ranks<ThreadGroup::Comm>(ranks, [&](int r, ThreadGroup::Comm& comm) {
    const auto k = static_cast<std::size_t>(r);
    const auto range = ml::even_class_range(c.W.rows(), ranks, r);
    const Mat<double> W_shard = c.W.middleRows(range.offset, range.count);
    Mat<double> dWs(range.count, c.W.cols());
    ml::Workspace<double> ws;
    dX_range[k].resize(c.X.rows(), c.X.cols());
    by_range[k] = ml::forward_backward(policy, c.X, W_shard, c.labels, {dX_range[k], dWs}, ws,
                                       ml::Shard{range, c.W.rows(), comm});
    dW_range.middleRows(range.offset, range.count) = dWs;
    dX_offset[k].resize(c.X.rows(), c.X.cols());
    by_offset[k] = ml::forward_backward(policy, c.X, W_shard, c.labels, {dX_offset[k], dWs}, ws,
                                        ml::Shard{range.offset, c.W.rows(), comm});
    dW_offset.middleRows(range.offset, range.count) = dWs;
    // Split: the context carries the communicator to the backward (upstream gradient 2).
    const auto fwd = ml::forward(policy, c.X, W_shard, c.labels, ws, ml::Shard{range, c.W.rows(), comm});
    split[k] = fwd.loss();
    dX_split[k].resize(c.X.rows(), c.X.cols());
    ml::backward(fwd, 2.0, {dX_split[k], dWs});
    dW_split.middleRows(range.offset, range.count) = dWs;
  });
  for (int r = 0; r < ranks; ++r) {
    CAPTURE(r);
    const auto k = static_cast<std::size_t>(r);
    CHECK(messages[k].empty());
    CHECK(by_range[k] == by_offset[k]);
    CHECK(split[k] == by_offset[k]);
    CHECK(dX_range[k] == dX_offset[k]);
    CHECK(rel_error(dX_split[k], 2.0 * dX_offset[k]) < 1e-14);
  }
  CHECK(dW_range == dW_offset);
  CHECK(rel_error(dW_split, 2.0 * dW_offset) < 1e-14);
  CHECK(rel_error(by_range[0], dense.loss) < 1e-12);
  CHECK(rel_error(dX_range[0], dense.dX) < 1e-12);
  CHECK(rel_error(dW_range, dense.dW) < 1e-12);
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
        ml::forward_backward(ml::CosFace<double>{}, c.X, W_shard, c.labels, {dX, dWs}, ws,
                             ml::Shard{range.offset, 8, comm});
      } catch (const ml::invalid_argument& e) {
        messages[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  CHECK(messages[0].find("another rank rejected its input") != std::string::npos);
  CHECK(messages[1].find("W row 0 contains a non-finite value") != std::string::npos);
}

TEST_CASE("Ranks agree on errors through host_allreduce_sum when the communicator has one") {
  Case c = random_case(6, 5, 11, 8);
  const ml::ArcFace<double> policy{64, 0.5};
  const auto dense = ml::forward_backward(policy, c.X, c.W, c.labels);
  const int ranks = 3;
  std::vector<std::vector<Index>> lengths(static_cast<std::size_t>(ranks)), failed_lengths(lengths);
  std::vector<double> losses(static_cast<std::size_t>(ranks));
  const auto messages = on_ranks<ThreadGroup::AgreeingComm>(ranks, [&](int r, ThreadGroup::AgreeingComm& comm) {
    const auto range = ml::even_class_range(c.W.rows(), ranks, r);
    const Mat<double> W_shard = c.W.middleRows(range.offset, range.count);
    Mat<double> dX(c.X.rows(), c.X.cols()), dWs(range.count, c.W.cols());
    ml::Workspace<double> ws;
    losses[static_cast<std::size_t>(r)] =
        ml::forward_backward(policy, c.X, W_shard, c.labels, {dX, dWs}, ws, ml::Shard{range.offset, c.W.rows(), comm});
    lengths[static_cast<std::size_t>(r)] = comm.lengths;
    // Another B on the last rank: every rank throws, after one exchange of the records.
    comm.lengths.clear();
    const Index b = r == ranks - 1 ? c.X.rows() - 1 : c.X.rows();
    const Mat<double> X = c.X.topRows(b);
    const Eigen::VectorXi y = c.labels.head(b);
    Mat<double> dXb(b, c.X.cols());
    try {
      ml::forward_backward(policy, X, W_shard, y, {dXb, dWs}, ws, ml::Shard{range.offset, c.W.rows(), comm});
    } catch (const ml::invalid_argument&) {
      failed_lengths[static_cast<std::size_t>(r)] = comm.lengths;
      throw;
    }
  });
  for (int r = 0; r < ranks; ++r) {
    CAPTURE(r);
    // The forward's records (8 doubles per rank) and its flag after the sweep over W's rows,
    // then the backward's flag: nothing else.
    CHECK(lengths[static_cast<std::size_t>(r)] == std::vector<Index>{8 * ranks, 1, 1});
    CHECK(losses[static_cast<std::size_t>(r)] == losses[0]);
    CHECK(messages[static_cast<std::size_t>(r)].find("the ranks disagree on B") != std::string::npos);
    CHECK(failed_lengths[static_cast<std::size_t>(r)] == std::vector<Index>{8 * ranks});
  }
  CHECK(rel_error(losses[0], dense.loss) < 1e-12);
}

TEST_CASE("Overlapping shards and a bad dW on one rank make every rank throw invalid_argument") {
  Case c = random_case(4, 5, 9, 9);
  const ml::CosFace<double> policy{};
  // The last rank's range starts one class early: an overlap every rank reports.
  auto messages = on_ranks<ThreadGroup::Comm>(2, [&](int r, ThreadGroup::Comm& comm) {
    auto range = ml::even_class_range(9, 2, r);
    if (r == 1) {
      --range.offset;
      ++range.count;
    }
    const Mat<double> W_shard = c.W.middleRows(range.offset, range.count);
    Mat<double> dX(4, 5), dWs(range.count, 5);
    ml::Workspace<double> ws;
    ml::forward_backward(policy, c.X, W_shard, c.labels, {dX, dWs}, ws, ml::Shard{range.offset, 9, comm});
  });
  for (const auto& m : messages) CHECK(m.find("the shards overlap") != std::string::npos);
  // A dW of the wrong shape on rank 0 in the backward.
  messages = on_ranks<ThreadGroup::Comm>(2, [&](int r, ThreadGroup::Comm& comm) {
    const auto range = ml::even_class_range(9, 2, r);
    const Mat<double> W_shard = c.W.middleRows(range.offset, range.count);
    Mat<double> dX(4, 5), dWs(range.count + (r == 0 ? 1 : 0), 5);
    ml::Workspace<double> ws;
    const auto fwd = ml::forward(policy, c.X, W_shard, c.labels, ws, ml::Shard{range.offset, 9, comm});
    ml::backward(fwd, 1.0, {dX, dWs});
  });
  CHECK(messages[0].find("dW") != std::string::npos);
  CHECK(messages[1].find("another rank rejected its input") != std::string::npos);
}

TEST_CASE("A backward argument only one rank gets wrong makes every rank throw instead of deadlocking") {
  Case c = random_case(4, 5, 9, 9);
  const ml::CosFace<double> policy{};
  // dmargins for a policy without learnable margins, on rank 1 only: rank 1 throws its own
  // message, rank 0 learns of it at the backward's agreement (not left in a collective).
  auto messages = on_ranks<ThreadGroup::Comm>(2, [&](int r, ThreadGroup::Comm& comm) {
    const auto range = ml::even_class_range(9, 2, r);
    const Mat<double> W_shard = c.W.middleRows(range.offset, range.count);
    Mat<double> dX(4, 5), dWs(range.count, 5);
    ml::Vector<double> dm(9);
    ml::Workspace<double> ws;
    if (r == 1)
      ml::forward_backward(policy, c.X, W_shard, c.labels, {dX, dWs, dm}, ws, ml::Shard{range, 9, comm});
    else
      ml::forward_backward(policy, c.X, W_shard, c.labels, {dX, dWs}, ws, ml::Shard{range, 9, comm});
  });
  CHECK(messages[0].find("another rank rejected its input") != std::string::npos);
  CHECK(messages[1].find("CosFace has no learnable margins") != std::string::npos);
  // A stale forward on rank 0 only (its workspace ran another forward since).
  messages = on_ranks<ThreadGroup::Comm>(2, [&](int r, ThreadGroup::Comm& comm) {
    const auto range = ml::even_class_range(9, 2, r);
    const Mat<double> W_shard = c.W.middleRows(range.offset, range.count);
    Mat<double> dX(4, 5), dWs(range.count, 5);
    ml::Workspace<double> ws, other;
    const ml::Shard shard{range, 9, comm};
    const auto fwd = ml::forward(policy, c.X, W_shard, c.labels, ws, shard);
    const auto again = ml::forward(policy, c.X, W_shard, c.labels, r == 0 ? ws : other, shard);
    static_cast<void>(again);
    ml::backward(fwd, 1.0, {dX, dWs});
  });
  CHECK(messages[0].find("has since run another forward()") != std::string::npos);
  CHECK(messages[1].find("another rank rejected its input") != std::string::npos);
}

TEST_CASE("LocalCommunicator: the sharded entry points with one rank give the single-process loss") {
  Case c = random_case(5, 4, 7, 10);
  const ml::CombinedMargin<double> policy{};
  const auto dense = ml::forward_backward(policy, c.X, c.W, c.labels);
  ml::LocalCommunicator local;
  Mat<double> dX(5, 4), dW(7, 4);
  ml::Workspace<double> ws;
  const double loss = ml::forward_backward(policy, c.X, c.W, c.labels, {dX, dW}, ws, ml::Shard{0, 7, local});
  CHECK(loss == dense.loss);
  CHECK(dX == dense.dX);
  CHECK(dW == dense.dW);
  // With one rank, a shard of some of the classes would silently be another loss.
  Mat<double> dWs(6, 4);
  CHECK_THROWS_WITH_AS(
      ml::forward_backward(policy, c.X, c.W.topRows(6), c.labels, {dX, dWs}, ws, ml::Shard{0, 7, local}),
      doctest::Contains("the shards cover 6 of the 7 classes"), ml::invalid_argument);
}

// The class-sharded loss over MPI ranks equals the single-process dense loss, for every policy.
//
// Run under mpiexec with any number of processes. Every rank builds the same full problem
// (deterministic generator), computes the dense reference itself, then evaluates its own
// shard of the classes with ml::MPICommunicator. Checked: the loss and dX are bit-identical
// on every rank and equal the dense ones to 1e-12 (relative, double); the dW shards gathered
// on rank 0 equal the dense dW to 1e-12; even and skewed splits (class counts not divisible by
// the process count, a rank with no class), with and without Options::class_block inside each
// rank; a bad shard on one rank makes every rank throw marginloss::invalid_argument, after
// which the ranks are still in step; a failing MPI call throws marginloss::communication_error.
// Exit status 0 on every rank when every check passed.
#include <marginloss/distributed/mpi.hpp>
#include <marginloss/distributed/sharded.hpp>
#include <marginloss/marginloss.hpp>

#include "../support.hpp"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace ml = marginloss;
using ml::Index;
using Mat = ml::RowMatrix<double>;

namespace {

int g_rank = 0, g_size = 1;
long g_checks = 0, g_failures = 0;

void check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::fprintf(stderr, "[rank %d] FAILED: %s\n", g_rank, what.c_str());
  }
}

using mltest::for_each_policy;
using mltest::rel_error;

struct Problem {
  Mat X, W;
  Eigen::VectorXi labels;
};

// The same deterministic problem on every rank.
Problem make_problem(Index B, Index D, Index C, std::uint64_t seed) {
  mltest::Case c = mltest::random_case(B, D, C, seed);
  return {c.X, c.W, c.labels};
}

// How the C classes are split over the ranks.
enum class Split { even, skewed };

// skewed: rank r gets a share proportional to (r + 1)^2, the last rank the remainder (so
// rank 0 may get no class at all when C is small).
ml::ClassRange class_range(Split split, Index C, int ranks, int rank) {
  if (split == Split::even) return ml::even_class_range(C, ranks, rank);
  Index total_weight = 0;
  for (int r = 0; r < ranks; ++r) total_weight += Index(r + 1) * (r + 1);
  Index offset = 0;
  for (int r = 0; r < rank; ++r) offset += C * (r + 1) * (r + 1) / total_weight;
  const Index count = rank == ranks - 1 ? C - offset : C * (rank + 1) * (rank + 1) / total_weight;
  return {offset, count};
}

// Bitwise equality of a buffer across ranks: rank 0's bytes are broadcast and compared.
bool same_on_every_rank(const double* data, Index n) {
  std::vector<double> root(data, data + n);
  MPI_Bcast(root.data(), static_cast<int>(n), MPI_DOUBLE, 0, MPI_COMM_WORLD);
  int same = std::memcmp(root.data(), data, sizeof(double) * static_cast<std::size_t>(n)) == 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &same, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return same == 1;
}

// Gathers every rank's dW shard into the full C x D matrix on rank 0.
Mat gather_dW(const Mat& dW_shard, Index offset, Index C, Index D) {
  std::vector<int> counts(static_cast<std::size_t>(g_size)), displs(static_cast<std::size_t>(g_size));
  int my_count = static_cast<int>(dW_shard.size()), my_displ = static_cast<int>(offset * D);
  MPI_Gather(&my_count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Gather(&my_displ, 1, MPI_INT, displs.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  Mat full = Mat::Constant(C, D, std::numeric_limits<double>::quiet_NaN());
  MPI_Gatherv(dW_shard.data(), my_count, MPI_DOUBLE, full.data(), counts.data(), displs.data(), MPI_DOUBLE, 0,
              MPI_COMM_WORLD);
  return full;
}

template <typename P>
void check_policy(const P& policy, const Problem& prob, Split split, Index block, const std::string& label) {
  const Index B = prob.X.rows(), D = prob.X.cols(), C = prob.W.rows();
  const auto dense = ml::forward_backward(policy, prob.X, prob.W, prob.labels);
  const auto range = class_range(split, C, g_size, g_rank);
  const Mat W_shard = prob.W.middleRows(range.offset, range.count);
  Mat dX(B, D), dW_shard(range.count, D);
  ml::Workspace<double> ws;
  ml::Options options;
  options.class_block = block;
  ml::MPICommunicator comm;
  double loss = std::numeric_limits<double>::quiet_NaN();
  try {
    loss = ml::forward_backward(policy, prob.X, W_shard, prob.labels, {dX, dW_shard}, ws,
                                ml::Shard{range.offset, C, comm}, options);
  } catch (const std::exception& e) {
    check(false, label + ": threw " + e.what());
  }
  check(same_on_every_rank(&loss, 1), label + ": loss differs across ranks");
  check(same_on_every_rank(dX.data(), dX.size()), label + ": dX differs across ranks");
  check(rel_error(loss, dense.loss) < 1e-12, label + ": loss vs dense, rel " + std::to_string(rel_error(loss, dense.loss)));
  check(rel_error(dX, dense.dX) < 1e-12, label + ": dX vs dense, rel " + std::to_string(rel_error(dX, dense.dX)));
  const Mat dW = gather_dW(dW_shard, range.offset, C, D);
  if (g_rank == 0)
    check(rel_error(dW, dense.dW) < 1e-12, label + ": dW vs dense, rel " + std::to_string(rel_error(dW, dense.dW)));
}

// The split form with an upstream gradient, reusing one workspace for two steps.
void check_split_forward_backward(const Problem& prob) {
  const Index B = prob.X.rows(), D = prob.X.cols(), C = prob.W.rows();
  const ml::CosFace<double> policy{30, 0.35};
  const auto dense = ml::forward_backward(policy, prob.X, prob.W, prob.labels);
  const auto range = ml::even_class_range(C, g_size, g_rank);
  const Mat W_shard = prob.W.middleRows(range.offset, range.count);
  ml::MPICommunicator comm;
  ml::Workspace<double> ws;
  ml::Options options;
  options.class_block = 4;
  for (int step = 0; step < 2; ++step) {
    Mat dX(B, D), dW_shard(range.count, D);
    const auto fwd = ml::forward(policy, prob.X, W_shard, prob.labels, ws, ml::Shard{range.offset, C, comm}, options);
    const double loss = fwd.loss();
    ml::backward(fwd, 2.5, {dX, dW_shard});
    check(rel_error(loss, dense.loss) < 1e-12, "split form: loss");
    check(rel_error(dX, 2.5 * dense.dX) < 1e-12, "split form: dX scaled by grad_loss");
    const Mat dW = gather_dW(dW_shard, range.offset, C, D);
    if (g_rank == 0) check(rel_error(dW, 2.5 * dense.dW) < 1e-12, "split form: dW scaled by grad_loss");
  }
}

// A bad shard on the last rank: every rank throws invalid_argument (none waits forever in a
// collective), and a following call succeeds on every rank.
void check_errors(const Problem& prob) {
  const Index B = prob.X.rows(), D = prob.X.cols(), C = prob.W.rows();
  const ml::ArcFace<double> policy{64, 0.5};
  const auto range = ml::even_class_range(C, g_size, g_rank);
  Mat W_shard = prob.W.middleRows(range.offset, range.count);
  const bool culprit = g_rank == g_size - 1;
  ml::MPICommunicator comm;
  ml::Workspace<double> ws;
  Mat dX(B, D), dW_shard(range.count, D);

  // Forward: a non-finite weight on one rank.
  if (culprit) W_shard(0, 0) = std::numeric_limits<double>::quiet_NaN();
  std::string message;
  try {
    ml::forward_backward(policy, prob.X, W_shard, prob.labels, {dX, dW_shard}, ws, ml::Shard{range.offset, C, comm});
  } catch (const ml::invalid_argument& e) {
    message = e.what();
  }
  if (culprit)
    check(message.find("W row 0 contains a non-finite value") != std::string::npos, "bad W: culprit's message: " + message);
  else
    check(message.find("another rank rejected its input") != std::string::npos, "bad W: other rank's message: " + message);
  W_shard(0, 0) = prob.W(range.offset, 0);

  // Backward: a dW of the wrong shape on one rank.
  message.clear();
  try {
    Mat bad_dW(range.count + (culprit ? 1 : 0), D);
    const auto fwd = ml::forward(policy, prob.X, W_shard, prob.labels, ws, ml::Shard{range.offset, C, comm});
    ml::backward(fwd, 1.0, {dX, bad_dW});
  } catch (const ml::invalid_argument& e) {
    message = e.what();
  }
  if (culprit)
    check(message.find("dW") != std::string::npos, "bad dW: culprit's message: " + message);
  else
    check(message.find("another rank rejected its input") != std::string::npos, "bad dW: other rank's message: " + message);

  // Still in step: a correct call matches the dense loss everywhere.
  const auto dense = ml::forward_backward(policy, prob.X, prob.W, prob.labels);
  double loss = std::numeric_limits<double>::quiet_NaN();
  try {
    loss = ml::forward_backward(policy, prob.X, W_shard, prob.labels, {dX, dW_shard}, ws,
                                ml::Shard{range.offset, C, comm});
  } catch (const std::exception& e) {
    check(false, std::string("after the errors: threw ") + e.what());
  }
  check(rel_error(loss, dense.loss) < 1e-12, "after the errors: loss vs dense");
}

// Every rank must agree on (B, D, C, policy, shard coverage) before any data moves: one rank
// with another B or D once made MPI abort (MPI_ERR_TRUNCATE) or hang, another SphereFace scale
// mode hung, shard ranges with a gap or an overlap gave a wrong loss. Now every rank throws.
void check_agreement(const Problem& prob) {
  const Index B = prob.X.rows(), D = prob.X.cols(), C = prob.W.rows();
  const ml::ClassRange range = ml::even_class_range(C, g_size, g_rank);
  const bool culprit = g_rank == g_size - 1;
  ml::MPICommunicator comm;
  const auto expect_all_throw = [&](const std::string& what, auto&& call, const std::string& needle) {
    std::string message;
    try {
      call();
    } catch (const ml::invalid_argument& e) {
      message = e.what();
    }
    check(message.find(needle) != std::string::npos, what + ": message '" + message + "' lacks '" + needle + "'");
  };
  {
    // Another batch size on one rank.
    const Index b = culprit ? B - 1 : B;
    const Mat X = prob.X.topRows(b);
    const Eigen::VectorXi y = prob.labels.head(b);
    Mat W_shard = prob.W.middleRows(range.offset, range.count), dX(b, D), dW(range.count, D);
    ml::Workspace<double> ws;
    expect_all_throw(
        "B differs",
        [&] {
          ml::forward_backward(ml::CosFace<double>{}, X, W_shard, y, {dX, dW}, ws, ml::Shard{range.offset, C, comm});
        },
        "disagree on B");
  }
  {
    // Another feature dimension on one rank.
    const Index d = culprit ? D - 1 : D;
    const Mat X = prob.X.leftCols(d);
    Mat W_shard = prob.W.middleRows(range.offset, range.count).leftCols(d), dX(B, d), dW(range.count, d);
    ml::Workspace<double> ws;
    expect_all_throw(
        "D differs",
        [&] {
          ml::forward_backward(ml::CosFace<double>{}, X, W_shard, prob.labels, {dX, dW}, ws,
                               ml::Shard{range.offset, C, comm});
        },
        "disagree on D");
  }
  {
    // SphereFace with the feature-norm scale everywhere but one rank.
    ml::SphereFace<double> p{};
    if (culprit) p.scale_mode = ml::Scale::fixed;
    Mat W_shard = prob.W.middleRows(range.offset, range.count), dX(B, D), dW(range.count, D);
    ml::Workspace<double> ws;
    expect_all_throw(
        "policy differs",
        [&] {
          ml::forward_backward(p, prob.X, W_shard, prob.labels, {dX, dW}, ws, ml::Shard{range.offset, C, comm});
        },
        "disagree on the policy");
  }
  if (g_size > 1) {
    // A gap: the last rank's range starts one class late (and so ends past C: shortened).
    // An overlap: the last rank's range starts one class early.
    for (const int shift : {+1, -1}) {
      Index offset = range.offset, count = range.count;
      if (culprit) {
        offset += shift;
        count -= shift > 0 ? 1 : 0;
      }
      Mat W_shard = prob.W.middleRows(offset, count), dX(B, D), dW(count, D);
      ml::Workspace<double> ws;
      expect_all_throw(
          shift > 0 ? "gap" : "overlap",
          [&] {
            ml::forward_backward(ml::CosFace<double>{}, prob.X, W_shard, prob.labels, {dX, dW}, ws,
                                 ml::Shard{offset, C, comm});
          },
          shift > 0 ? "cover" : "overlap");
    }
  }
  // Still in step afterwards.
  Mat W_shard = prob.W.middleRows(range.offset, range.count), dX(B, D), dW(range.count, D);
  ml::Workspace<double> ws;
  const auto dense = ml::forward_backward(ml::CosFace<double>{}, prob.X, prob.W, prob.labels);
  const double loss = ml::forward_backward(ml::CosFace<double>{}, prob.X, W_shard, prob.labels, {dX, dW}, ws,
                                           ml::Shard{range, C, comm});  // from the ClassRange
  check(rel_error(loss, dense.loss) < 1e-12, "after the disagreements: loss vs dense");
}

// A failing MPI call throws marginloss::communication_error (the one exception of a failed
// collective, NCCL's too), not invalid_argument. MPI returns errors only under MPI_ERRORS_RETURN:
// set on the handles an invalid communicator reports to, for this check only.
void check_communication_error() {
  static_assert(ml::is_communicator_v<ml::MPICommunicator> && !ml::is_device_communicator_v<ml::MPICommunicator>);
  MPI_Errhandler world_handler, self_handler;
  MPI_Comm_get_errhandler(MPI_COMM_WORLD, &world_handler);
  MPI_Comm_get_errhandler(MPI_COMM_SELF, &self_handler);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  std::string message = "nothing thrown";
  try {
    ml::MPICommunicator null_comm(MPI_COMM_NULL);
  } catch (const ml::communication_error& e) {
    message = e.what();
  } catch (const std::exception& e) {
    message = std::string("another exception: ") + e.what();
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, world_handler);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, self_handler);
  MPI_Errhandler_free(&world_handler);
  MPI_Errhandler_free(&self_handler);
  check(message.rfind("marginloss: MPI_Comm_rank failed: ", 0) == 0,
        "MPICommunicator(MPI_COMM_NULL) must throw communication_error naming MPI_Comm_rank: " + message);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);

  // C = 23 is not divisible by 2, 3 or 4; C = 3 leaves a rank without classes at 4 ranks.
  const Problem problems[] = {make_problem(8, 6, 23, 11), make_problem(5, 4, 3, 12)};
  for (const auto& prob : problems)
    for (Split split : {Split::even, Split::skewed})
      for (Index block : {Index(0), Index(2), Index(5)})
        for_each_policy([&](const auto& policy) {
          const std::string label = std::string(std::decay_t<decltype(policy)>::name) + " C=" +
                                    std::to_string(prob.W.rows()) + (split == Split::even ? " even" : " skewed") +
                                    " class_block=" + std::to_string(block);
          check_policy(policy, prob, split, block, label);
        });
  check_split_forward_backward(problems[0]);
  check_errors(problems[0]);
  check_agreement(problems[0]);
  check_communication_error();

  long totals[2] = {g_checks, g_failures};
  MPI_Allreduce(MPI_IN_PLACE, totals, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0)
    std::printf("marginloss MPI sharded tests, %d ranks: %ld checks, %ld failed\n", g_size, totals[0], totals[1]);
  MPI_Finalize();
  return totals[1] == 0 ? 0 : 1;
}

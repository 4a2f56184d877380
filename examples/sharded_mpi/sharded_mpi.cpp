// A classifier head too wide for one process, sharded over MPI ranks by class.
//
//   mpirun -n 2 ./sharded_mpi [--classes 200000] [--batch 256] [--dim 128] [--steps 5] [--class-block 0]
//
// Each rank owns a contiguous slice of the C classes (ml::even_class_range) and only that
// slice of the weights W and of their gradient; every rank sees the whole batch. A few SGD
// steps train the weight shards on a fixed synthetic batch (features near hidden class
// prototypes) with CosFace. Printed: the loss per step, then per rank its classes, the median
// forward + backward time, the bytes of its workspace and its peak resident memory; finally
// whether the loss was bit-identical on every rank at every step (exit status 1 if not).
#include <marginloss/distributed/mpi.hpp>
#include <marginloss/distributed/sharded.hpp>
#include <marginloss/marginloss.hpp>

#include <mpi.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace ml = marginloss;
using ml::Index;
using Mat = ml::RowMatrix<float>;

namespace {

// A value in [-1, 1) that depends only on (stream, row, column): every rank generates the
// same numbers for a global class whatever the number of ranks.
float hashed_uniform(std::uint64_t stream, std::uint64_t row, std::uint64_t col) {
  std::uint64_t z = stream * 0x9E3779B97F4A7C15ULL ^ (row * 0xD1B54A32D192ED03ULL + col);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 40) * 0x1.0p-23 - 1.0);
}

long long arg(int argc, char** argv, const char* name, long long fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  return fallback;
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  const Index C = arg(argc, argv, "--classes", 200000), B = arg(argc, argv, "--batch", 256),
              D = arg(argc, argv, "--dim", 128);
  const int steps = static_cast<int>(arg(argc, argv, "--steps", 5));
  ml::Options options;
  options.class_block = arg(argc, argv, "--class-block", 0);
  // Every rank sees the same arguments, so every rank reports and leaves together.
  if (C < 1 || B < 1 || D < 1 || steps < 1 || options.class_block < 0) {
    if (rank == 0)
      std::fprintf(stderr,
                   "sharded_mpi: --classes, --batch, --dim and --steps must be >= 1 and --class-block >= 0 "
                   "(got %lld, %lld, %lld, %d, %lld)\n",
                   static_cast<long long>(C), static_cast<long long>(B), static_cast<long long>(D), steps,
                   static_cast<long long>(options.class_block));
    MPI_Finalize();
    return 2;
  }
  const float lr = 20.0f;

  // This rank's classes and weights; the batch (features near their class's prototype).
  const auto range = ml::even_class_range(C, size, rank);
  Mat W_shard(range.count, D), dW_shard(range.count, D), X(B, D), dX(B, D);
  for (Index j = 0; j < range.count; ++j)
    for (Index k = 0; k < D; ++k) W_shard(j, k) = hashed_uniform(1, static_cast<std::uint64_t>(range.offset + j), k);
  Eigen::VectorXi labels(B);
  for (Index i = 0; i < B; ++i) {
    labels(i) = static_cast<int>(static_cast<double>(hashed_uniform(2, i, 0) + 1.0f) * 0.5 * static_cast<double>(C)) %
                static_cast<int>(C);
    for (Index k = 0; k < D; ++k)
      X(i, k) = hashed_uniform(3, static_cast<std::uint64_t>(labels(i)), k) + 0.3f * hashed_uniform(4, i, k);
  }

  const ml::CosFace<float> policy{30, 0.2f};
  ml::MPICommunicator comm;
  ml::Workspace<float> ws;
  std::vector<float> losses;
  std::vector<double> ms;
  try {
    for (int step = 0; step < steps; ++step) {
      MPI_Barrier(MPI_COMM_WORLD);
      const auto t0 = std::chrono::steady_clock::now();
      const float loss = ml::forward_backward(policy, X, W_shard, labels, {dX, dW_shard}, ws,
                                              ml::Shard{range, C, comm}, options);
      const auto t1 = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      losses.push_back(loss);
      W_shard -= lr * dW_shard;  // SGD on this rank's weights only
      if (rank == 0) std::printf("step %d  loss %.6f\n", step, static_cast<double>(loss));
    }
  } catch (const ml::invalid_argument& e) {
    // Bad input on any rank: every rank throws (the ranks agree on errors), so all can leave.
    std::fprintf(stderr, "sharded_mpi [rank %d]: %s\n", rank, e.what());
    MPI_Finalize();
    return 2;
  } catch (const ml::communication_error& e) {
    // A failed collective (MPI returns errors only under MPI_ERRORS_RETURN): the other ranks
    // may be waiting in it, so end the job.
    std::fprintf(stderr, "sharded_mpi [rank %d]: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 3);
  }

  // Per-rank figures, printed by rank 0 in rank order.
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const double median_ms = sorted.empty() ? 0.0 : sorted[sorted.size() / 2];
  const double workspace = static_cast<double>(ml::Workspace<float>::bytes_required(B, D, range.count, ws.class_block()) +
                                               (size > 1 ? sizeof(float) * static_cast<std::size_t>(B * D) : 0));
  double mine[6] = {static_cast<double>(range.offset), static_cast<double>(range.count), median_ms, workspace,
                    static_cast<double>(ws.class_block()), peak_rss_mib()};
  std::vector<double> all(static_cast<std::size_t>(6 * size));
  MPI_Gather(mine, 6, MPI_DOUBLE, all.data(), 6, MPI_DOUBLE, 0, MPI_COMM_WORLD);

  // The loss must be bit-identical on every rank at every step.
  std::vector<float> root_losses = losses;
  MPI_Bcast(root_losses.data(), steps, MPI_FLOAT, 0, MPI_COMM_WORLD);
  int identical = std::memcmp(root_losses.data(), losses.data(), sizeof(float) * losses.size()) == 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &identical, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);

  if (rank == 0) {
    std::printf("\nB = %lld, D = %lld, C = %lld classes over %d ranks, fp32, CosFace(s = 30, m = 0.2), %d steps\n",
                static_cast<long long>(B), static_cast<long long>(D), static_cast<long long>(C), size, steps);
    std::printf("%4s  %-20s %9s %11s %14s %12s %13s\n", "rank", "classes", "shard", "class_block", "fwd+bwd ms",
                "workspace MB", "peak RSS MB");
    for (int r = 0; r < size; ++r) {
      const double* v = &all[static_cast<std::size_t>(6 * r)];
      const std::string classes =
          "[" + std::to_string(static_cast<long long>(v[0])) + ", " + std::to_string(static_cast<long long>(v[0] + v[1])) + ")";
      std::printf("%4d  %-20s %9lld %11lld %14.1f %12.1f %13.1f\n", r, classes.c_str(), static_cast<long long>(v[1]),
                  static_cast<long long>(v[4]), v[2], v[3] / 1048576.0, v[5]);
    }
    std::printf("loss identical on all %d ranks at every step: %s\n", size, identical ? "yes" : "NO");
  }
  MPI_Finalize();
  return identical ? 0 : 1;
}

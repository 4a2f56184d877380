// marginloss: how the ranks of a sharded call agree on errors -- one implementation for the CPU
// engine (detail/engine.hpp) and the CUDA engine (cuda/detail/engine.cuh), over the
// communicator's host_allreduce_sum (distributed/communicator.hpp states the contract).
//
// Each rank checks its own arguments first and keeps what it would throw. Then, before the first
// collective that moves data, the ranks exchange
//   * in a forward, one CallRecord per rank (agree_on_call): whether it failed, and what every
//     rank must have in common (B, D, the number of classes, the policy) or must tile between
//     them (the shard ranges). With another B or D a collective would get buffers of another
//     length (MPI aborts or hangs, NCCL reads out of bounds), with another C or policy the ranks
//     would compute different losses, and shard ranges with a gap or an overlap give a wrong
//     loss;
//   * in a backward, one flag per rank (agree_on_errors).
// Every rank reaches the same verdict from the same numbers: the rank that was wrong throws its
// own marginloss::invalid_argument, every other rank throws one naming the problem, and no rank
// is left waiting in a collective. Eigen-free (the CUDA host code includes it).
#pragma once

#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

#include "../detail/checks.hpp"
#include "../errors.hpp"
#include "communicator.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// Every rank learns whether any rank rejected its input before the first collective that
// depends on it, so a bad shard throws everywhere instead of deadlocking the others. `error` is
// this rank's invalid_argument (null when its arguments were fine).
template <typename Comm>
inline void agree_on_errors(Comm& comm, const std::exception_ptr& error) {
  if constexpr (!is_local_communicator_v<Comm>) {
    if (comm.size() > 1) {
      double failed = error ? 1.0 : 0.0;
      host_allreduce_sum(comm, &failed, 1);
      if (failed > 0 && !error) fail_other_rank(failed);
    }
  }
  if (error) std::rethrow_exception(error);
}

// What every rank of a sharded forward must agree on (8 doubles: exact for every value below
// 2^53; the policy fingerprint, 64 bits, is split in two halves of 32).
struct CallRecord {
  double failed, batch, dim, num_classes, fingerprint_hi, fingerprint_lo, offset, classes;
};

// The record of this rank's call; the fingerprint is filled by the caller (only when sharded
// and its arguments were fine: the policy may be invalid otherwise).
inline CallRecord call_record(bool failed, Index batch, Index dim, Index num_classes, Index offset, Index classes) {
  return {failed ? 1.0 : 0.0, double(batch), double(dim), double(num_classes), 0.0, 0.0, double(offset), double(classes)};
}

inline void set_fingerprint(CallRecord& record, std::uint64_t fingerprint) {
  record.fingerprint_hi = static_cast<double>(fingerprint >> 32);
  record.fingerprint_lo = static_cast<double>(fingerprint & 0xffffffffull);
}

// One host_allreduce_sum of a vector of size() records, each rank writing its own slot, tells
// every rank every record (O(P^2) comparisons of P small records, nothing allocated once `buf`
// has grown). `error` is this rank's invalid_argument, rethrown first. With one rank nothing is
// exchanged; its shard must still be every class.
template <typename Comm>
inline void agree_on_call(Comm& comm, const CallRecord& mine, const std::exception_ptr& error, std::vector<double>& buf) {
  int P = 1;
  if constexpr (!is_local_communicator_v<Comm>) P = comm.size();
  if (P <= 1) {
    if (error) std::rethrow_exception(error);
    // One rank must hold every class (a partial shard would silently give another loss).
    if (mine.classes != mine.num_classes)
      fail("the shards cover ", mine.classes, " of the ", mine.num_classes, " classes: every class must be on exactly one rank");
    return;
  }
  constexpr int F = sizeof(CallRecord) / sizeof(double);
  static_assert(sizeof(CallRecord) == F * sizeof(double), "CallRecord holds doubles only");
  buf.assign(static_cast<std::size_t>(F) * static_cast<std::size_t>(P), 0.0);
  std::memcpy(buf.data() + static_cast<std::size_t>(F) * static_cast<std::size_t>(comm.rank()), &mine, sizeof mine);
  host_allreduce_sum(comm, buf.data(), static_cast<Index>(buf.size()));
  const auto rec = [&](int r) {
    CallRecord c;
    std::memcpy(&c, buf.data() + static_cast<std::size_t>(F) * static_cast<std::size_t>(r), sizeof c);
    return c;
  };
  int failed = 0;
  for (int r = 0; r < P; ++r) failed += rec(r).failed != 0 ? 1 : 0;
  if (error) std::rethrow_exception(error);
  if (failed > 0) fail_other_rank(failed);
  const CallRecord r0 = rec(0);
  for (int r = 1; r < P; ++r) {
    const CallRecord c = rec(r);
    if (c.batch != r0.batch) fail("the ranks disagree on B: rank 0 has ", r0.batch, " samples, rank ", r, " has ", c.batch);
    if (c.dim != r0.dim) fail("the ranks disagree on D: rank 0 has ", r0.dim, ", rank ", r, " has ", c.dim);
    if (c.num_classes != r0.num_classes)
      fail("the ranks disagree on the number of classes: rank 0 has ", r0.num_classes, ", rank ", r, " has ", c.num_classes);
    if (c.fingerprint_hi != r0.fingerprint_hi || c.fingerprint_lo != r0.fingerprint_lo)
      fail("the ranks disagree on the policy: rank ", r, "'s parameters differ from rank 0's (every rank must pass the same policy)");
  }
  // The shards must tile [0, num_classes): each inside it, no two overlapping, and together as
  // many classes as there are.
  double total = 0;
  for (int r = 0; r < P; ++r) {
    const CallRecord c = rec(r);
    total += c.classes;
    if (c.offset < 0 || c.offset + c.classes > r0.num_classes)
      fail("rank ", r, "'s classes [", c.offset, ", ", c.offset + c.classes, ") are not inside [0, ", r0.num_classes, ")");
    for (int q = 0; q < r; ++q) {
      const CallRecord o = rec(q);
      if (c.classes > 0 && o.classes > 0 && c.offset < o.offset + o.classes && o.offset < c.offset + c.classes)
        fail("the shards overlap: rank ", q, " has classes [", o.offset, ", ", o.offset + o.classes, ") and rank ", r,
             " has [", c.offset, ", ", c.offset + c.classes, ")");
    }
  }
  if (total != r0.num_classes)
    fail("the shards cover ", total, " of the ", r0.num_classes, " classes: every class must be on exactly one rank");
}

}  // namespace detail
MARGINLOSS_NAMESPACE_END

// marginloss: the CPU engine, dense, class-chunked and class-sharded (docs/formulas.md §1, §7).
//
// Each process owns a contiguous range of classes (all of them unless sharded: rows of W,
// starting at global class `class_offset`) and sees the whole batch. The range is processed in
// blocks of `block` classes:
//   forward : per block K = X^ W_b^T (B x block), c_ij = K_ij / |w_j|; per row the block's
//             max and sum of exp, merged into a running (max, rescaled sum) -- an online
//             logsumexp; across ranks all-reduce(max), rescale, all-reduce(sum).
//   backward: per block (recomputing K unless the range is one block, the dense path kept in
//             the workspace) G'_ij = dL/dc_ij / |w_j| in place of c, then
//             dX += G' W_b,  dW_b = Q_j (G'^T X^)_j   (Q_j = I - w^_j w^_j^T),
//             all-reduce(sum) of dX across ranks, then dX_i = P_i dX_i / |x_i| + dL/dS_i x^_i.
// The projections use <(G W^)_i, x^_i> = sum_j G_ij c_ij, so neither the r_i nor the q_j of
// docs/formulas.md are accumulated and no normalised copy of W is made. The target cosine t_i
// comes from its own dot product on the owning rank (all-reduced), so every engine and rank
// sees the bit-identical t_i and the once-per-row policy terms (margined target, mining
// threshold) are known before any class is visited.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "../distributed/agreement.hpp"
#include "../errors.hpp"
#include "../policies/common.hpp"
#include "../workspace.hpp"
#include "forward_record.hpp"
#include "math.hpp"
#include "products.hpp"
#include "row_norms.hpp"
#include "row_kernel.hpp"
#include "row_pass.hpp"
#include "threads.hpp"
#include "validate.hpp"

MARGINLOSS_NAMESPACE_BEGIN
namespace detail {

// How the ranks of a sharded call agree on errors (agree_on_call, agree_on_errors):
// distributed/agreement.hpp, shared with the CUDA engine.

// Holds a workspace's in-use mark for the duration of one engine call.
class WorkspaceGuard {
 public:
  explicit WorkspaceGuard(InUseFlag& flag) : flag_(flag) {
    if (!flag_.try_acquire())
      fail("this Workspace is in use by another call (another thread?): give each thread its own Workspace");
  }
  ~WorkspaceGuard() { flag_.release(); }
  WorkspaceGuard(const WorkspaceGuard&) = delete;
  WorkspaceGuard& operator=(const WorkspaceGuard&) = delete;

 private:
  InUseFlag& flag_;
};

// The bytes a row-major view spans, [begin, end).
template <typename M>
inline bool views_overlap(const M& a, const Eigen::Ref<const RowMatrix<typename M::Scalar>>& b) {
  if (a.size() == 0 || b.size() == 0) return false;
  const auto begin = [](const auto* p) { return reinterpret_cast<std::uintptr_t>(p); };
  const auto a0 = begin(a.data()), b0 = begin(b.data());
  const auto a1 = begin(a.data() + (a.rows() - 1) * a.outerStride() + a.cols());
  const auto b1 = begin(b.data() + (b.rows() - 1) * b.outerStride() + b.cols());
  return a0 < b1 && b0 < a1;
}

// The mean of B values, summed in double in row order (the state hook's statistic).
template <typename T>
double batch_mean(const T* v, Index B) {
  double sum = 0;
  for (Index i = 0; i < B; ++i) sum += static_cast<double>(v[i]);
  return sum / static_cast<double>(B);
}

// The margins' regulariser of a learnable-margins policy (policies/common.hpp):
// R = weight * mean_{k in J} m_k over the classes J = ids[0, n), or 0 .. n-1 when ids is null,
// summed in J's order in double (CUDA: margins.cuh, the same order). The engine takes J = the
// batch's distinct classes or all classes, by the policy's scope; sampling/subset.hpp takes the
// J of SubsetOptions::regulariser on the full margin vector.
template <typename T, typename Margins>
T margin_regulariser(T weight, const Margins& m, const Index* ids, Index n) {
  double sum = 0;
  for (Index k = 0; k < n; ++k) sum += static_cast<double>(m[ids ? ids[k] : k]);
  return static_cast<T>(static_cast<double>(weight) * (sum / static_cast<double>(n)));
}

// dm += grad_loss * dR/dm = grad_loss * weight / |J| on the classes of J (as above).
template <typename T>
void add_margin_regulariser_gradient(T grad_loss, T weight, const Index* ids, Index n, T* dm) {
  const T g = grad_loss * weight / static_cast<T>(n);
  for (Index k = 0; k < n; ++k) dm[ids ? ids[k] : k] += g;
}

struct Engine {
  static_assert(Workspace<float>::class_tile <= kRowTile, "a class tile must fit the row pass's stack tile");
  // PP: the policy as the entry point received it (a reference type); a stateful policy
  // (has_state_hook) is updated here when PP is a modifiable lvalue. with_regulariser = false
  // leaves a learnable-margins policy's regulariser (and, in the backward, its gradient) to
  // the caller: sampling/subset.hpp, whose class set J is not the engine's.
  template <typename PP, typename Labels, typename Comm, typename P = std::decay_t<PP>, typename T = typename P::value_type>
  static T forward(PP&& policy, const Eigen::Ref<const RowMatrix<T>>& X, const Eigen::Ref<const RowMatrix<T>>& W,
                   Index class_offset, Index num_classes, const Eigen::MatrixBase<Labels>& labels, Comm& comm,
                   Index block, Workspace<T>& ws, bool with_regulariser = true) {
    static_assert(is_margin_policy_v<P>, "marginloss: P does not satisfy the policy contract (policies/common.hpp)");
    WorkspaceGuard guard(ws.in_use_);
    ws.holds_forward_ = false;
    ++ws.forward_serial_;
    const Index B = X.rows(), D = X.cols(), C = W.rows();
    CpuPlan<T> plan;
    std::exception_ptr error;
    try {
      policy.validate();
      check_state_hook<PP>(policy);
      check_batch(B, D, num_classes, W.cols(), labels.size());
      check_shard_range(class_offset, C, num_classes);
      if constexpr (has_class_values<P>::value) check_class_values_on_host(policy, num_classes);
      // Every buffer of the call, sized once by the plan that Workspace::bytes_required counts.
      plan = Workspace<T>::plan(B, D, C, block, max_threads(), comm.size() > 1);
      ws.prepare(plan);
      copy_labels(labels, num_classes, ws.labels_);
      compute_row_norms<T>("X", X, &ws.x_norm_, ws.x_inv_norm_);
    } catch (const invalid_argument&) {
      error = std::current_exception();
    }
    {
      CallRecord mine = call_record(static_cast<bool>(error), B, D, num_classes, class_offset, C);
      if (!error && comm.size() > 1) set_fingerprint(mine, policy_fingerprint(policy, num_classes));
      agree_on_call(comm, mine, error, ws.agree_);
    }

    ws.xhat_.noalias() = ws.x_inv_norm_.asDiagonal() * X;
    ws.num_classes_ = num_classes;
    ws.class_offset_ = class_offset;
    ws.local_classes_ = C;
    ws.block_ = plan.block;
    [[maybe_unused]] const int threads = plan.threads;  // used by the OpenMP pragmas only
    const Index tile_classes = plan.tile;

    // t_i on the rank owning y_i, zero elsewhere, then summed: exact, one owner per row. |w_y|
    // is computed here by the same function as in the sweep below, so the bits agree. A bad
    // row of W is reported after the sweep, which visits every row.
    for (Index i = 0; i < B; ++i) {
      const Index local = ws.labels_(i) - class_offset;
      T t = T(0);
      if (local >= 0 && local < C) {
        const double n = stable_row_norm(W.row(local).data(), D);
        if (norm_accepted<T>(n))
          t = cosine_from_dot(ws.xhat_.row(i).dot(W.row(local)), static_cast<T>(1.0 / n));
      }
      ws.target_cos_(i) = t;
    }
    comm.allreduce_sum(ws.target_cos_.data(), B);
    // State updated from the batch before it is used (CurricularFace's tau; every rank sees the
    // same all-reduced t_i, so every rank's policy gets the same state).
    if constexpr (has_state_hook<P>::value && modifiable_policy_v<PP>)
      if (policy.updates_in_forward()) policy.update_with_target_mean(batch_mean(ws.target_cos_.data(), B));
    const auto* terms = store_row_terms(policy, ws);

    // The sweep: every tile of classes is one thread's, from |w_j| to the tile's (max, sum of
    // exp) per row, while the tile's rows of W and its cosines are in that thread's cache.
    ws.row_max_.setConstant(B, -std::numeric_limits<T>::infinity());
    ws.row_sum_.setZero(B);
    bool bad_w = false;
    for (Index b0 = 0; b0 < C && !bad_w; b0 += ws.block_) {
      const Index nbk = std::min(ws.block_, C - b0);
      const Index ntiles = (nbk + tile_classes - 1) / tile_classes;
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) reduction(|| : bad_w)
#endif
      {
        serial_nested_regions();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (Index tile = 0; tile < ntiles; ++tile) {
          const Index j0 = tile * tile_classes, n = std::min(tile_classes, nbk - j0), g0 = b0 + j0;
          T* w_inv = ws.w_inv_norm_.data() + g0;
          for (Index j = 0; j < n; ++j) {
            const double norm = stable_row_norm(W.row(g0 + j).data(), D);
            const bool ok = norm_accepted<T>(norm);
            bad_w = bad_w || !ok;
            w_inv[j] = ok ? static_cast<T>(1.0 / norm) : T(0);
          }
          auto K = tile_cosines(ws, j0, n);
          product_a_bt(ws.xhat_, W.middleRows(g0, n), K);
          for (Index i = 0; i < B; ++i) {
            T* c = K.row(i).data();
            const T S = policy.scale(ws.x_norm_(i));
            const Index target = ws.labels_(i) - class_offset - g0;
            const auto [m, sum] = span_max_sum_exp(policy, terms[i], S, c, n, target, w_inv);
            ws.tile_max_(tile * B + i) = m;
            ws.tile_sum_(tile * B + i) = sum;
          }
        }
      }
      if (bad_w) break;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
      for (Index i = 0; i < B; ++i)
        for (Index tile = 0; tile < ntiles; ++tile)
          merge_lse(ws.row_max_(i), ws.row_sum_(i), ws.tile_max_(tile * B + i), ws.tile_sum_(tile * B + i));
    }
    try {
      if (bad_w)
        for (Index j = 0; j < C; ++j) {
          const double norm = stable_row_norm(W.row(j).data(), D);
          if (!norm_accepted<T>(norm)) fail_bad_row<T>("W", W, j, norm);
        }
    } catch (const invalid_argument&) {
      error = std::current_exception();
    }
    agree_on_errors(comm, error);

    if (comm.size() > 1) {
      // Global max, then each rank rescales its sum to it before the sum is reduced.
      ws.lse_ = ws.row_max_;
      comm.allreduce_max(ws.lse_.data(), B);
      for (Index i = 0; i < B; ++i) ws.row_sum_(i) = rescale_sum_to_max(ws.row_max_(i), ws.row_sum_(i), ws.lse_(i));
      ws.row_max_ = ws.lse_;
      comm.allreduce_sum(ws.row_sum_.data(), B);
    }

    for (Index i = 0; i < B; ++i) {
      ws.lse_(i) = finish_lse(ws.row_max_(i), ws.row_sum_(i));
      ws.row_loss_(i) = row_loss(ws.lse_(i), terms[i], policy.scale(ws.x_norm_(i)));
    }
    // Sequential sum: the loss does not depend on the thread count.
    double total = 0;
    for (Index i = 0; i < B; ++i) total += static_cast<double>(ws.row_loss_(i));
    ws.loss_ = static_cast<T>(total / static_cast<double>(B));
    ws.regulariser_ = T(0);
    ws.regulariser_included_ = false;
    if constexpr (has_learnable_margins<P>::value) {
      if (with_regulariser) {
        const bool over_batch = policy.regulariser_over_batch();
        if (over_batch) {
          ws.batch_classes_ = ws.labels_;
          std::sort(ws.batch_classes_.data(), ws.batch_classes_.data() + B);
          ws.batch_class_count_ =
              std::unique(ws.batch_classes_.data(), ws.batch_classes_.data() + B) - ws.batch_classes_.data();
        }
        ws.regulariser_ = margin_regulariser(policy.regulariser_weight(), policy.class_values(),
                                             over_batch ? ws.batch_classes_.data() : nullptr,
                                             over_batch ? ws.batch_class_count_ : num_classes);
        ws.regulariser_included_ = true;
        ws.loss_ += ws.regulariser_;
      }
    } else {
      static_cast<void>(with_regulariser);
    }
    // Identical on every rank, so every rank throws together.
    if (!std::isfinite(ws.loss_)) fail_not_representable("the loss");
    ws.policy_fingerprint_ = policy_fingerprint(policy, num_classes);
    ws.holds_forward_ = true;
    return ws.loss_;
  }

  template <typename P, typename Comm, typename T = typename P::value_type>
  static void backward(const P& policy, const Eigen::Ref<const RowMatrix<T>>& W, Comm& comm, Workspace<T>& ws,
                       T grad_loss, Eigen::Ref<RowMatrix<T>> dX, Eigen::Ref<RowMatrix<T>> dW, T* dmargins = nullptr,
                       Index dmargins_size = 0) {
    // A forward is consumed by one backward call, also by one that throws: its buffers are
    // about to be overwritten.
    WorkspaceGuard guard(ws.in_use_);
    const bool held = ws.holds_forward_;
    ws.holds_forward_ = false;
    std::exception_ptr error;
    try {
      if (!held) fail("backward() needs a forward() on the same workspace first (each forward is consumed once)");
      // The policy and W are the forward's own (the Forward context, or sampling/subset.hpp's
      // call), and the context's serial rules out another forward's buffers; what can still
      // change is the per-class data its view points at (detail/forward_record.hpp).
      if (policy_fingerprint(policy, ws.num_classes_) != ws.policy_fingerprint_)
        fail("backward() got ", P::name, " with other parameters ", has_class_values<P>::value ? "or per-class margins " : "",
             "than its forward(): pass the forward's policy unchanged (step the optimiser after the backward)");
      check_output_shape("dX", dX.rows(), dX.cols(), ws.batch(), ws.dim());
      check_output_shape("dW", dW.rows(), dW.cols(), ws.local_classes_, ws.dim());
      // The backward reads W while it writes dX and dW (it does not read X: dX may alias X).
      if (views_overlap(dW, W)) fail("dW overlaps W: the gradient needs W while dW is written; pass separate memory");
      if (views_overlap(dX, W)) fail("dX overlaps W: the gradient needs W while dX is written; pass separate memory");
      if (views_overlap(dX, Eigen::Ref<const RowMatrix<T>>(dW))) fail("dX and dW overlap: pass separate memory");
      check_grad_loss(grad_loss);
      if (dmargins && dmargins_size != ws.num_classes_)
        fail("dmargins has ", dmargins_size, " entries but there are ", ws.num_classes_, " classes");
    } catch (const invalid_argument&) {
      error = std::current_exception();
    }
    agree_on_errors(comm, error);

    const Index B = ws.batch(), D = ws.dim(), C = ws.local_classes_;
    const bool one_block = ws.block_ >= C;
    const T coef = grad_loss / static_cast<T>(B);
    const bool feature_norm = policy.scale_is_feature_norm();
    // Sharded: accumulate into the workspace (contiguous, for the all-reduce).
    const bool sharded = comm.size() > 1;
    const CpuPlan<T> plan = Workspace<T>::plan(B, D, C, ws.block_, max_threads(), sharded);
    ws.prepare(plan);
    const int threads = plan.threads;
    Eigen::Ref<RowMatrix<T>> acc = sharded ? Eigen::Ref<RowMatrix<T>>(ws.dx_partial_) : dX;
    // Threads other than the first accumulate their tiles' G W into partial dX buffers, added
    // in thread order at the end (a fixed order for a fixed thread count).
    ws.thread_dscale_.head(threads * B).setZero();
    const auto* terms = store_row_terms(policy, ws);
    acc.setZero();
    if (threads > 1) ws.thread_dx_.topRows((threads - 1) * B).setZero();
    double row_bound = 0;  // sum_i |coef S_i| (1 + |f'(t_i)|), with a factor 2 of slack
    for (Index i = 0; i < B; ++i)
      row_bound += 2.0 * std::fabs(static_cast<double>(coef) * static_cast<double>(policy.scale(ws.x_norm_(i)))) *
                   (1.0 + std::fabs(static_cast<double>(terms[i].target.slope)));
    bool overflow = false;
    const Index tile_classes = plan.tile;
    for (Index b0 = 0; b0 < C; b0 += ws.block_) {
      const Index nbk = std::min(ws.block_, C - b0);
      const Index ntiles = (nbk + tile_classes - 1) / tile_classes;
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) reduction(|| : overflow)
#endif
      {
        const int tid = thread_index();
        Eigen::Ref<RowMatrix<T>> dx_part = tid == 0 ? acc : Eigen::Ref<RowMatrix<T>>(ws.thread_dx_.middleRows((tid - 1) * B, B));
        T* dscale = ws.thread_dscale_.data() + tid * B;
        serial_nested_regions();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (Index tile = 0; tile < ntiles; ++tile) {
          const Index j0 = tile * tile_classes, n = std::min(tile_classes, nbk - j0), g0 = b0 + j0;
          const T* w_inv = ws.w_inv_norm_.data() + g0;
          const auto Wt = W.middleRows(g0, n);
          auto K = tile_cosines(ws, j0, n);
          if (!one_block) product_a_bt(ws.xhat_, Wt, K);
          // radial[j] = sum_i G'_ij c_ij = <(G'^T X^)_j, w^_j>: the part of dW_j along w_j.
          alignas(64) T radial[Workspace<T>::class_tile];
          std::fill(radial, radial + n, T(0));
          // abs_sum bounds sum_ij |G'_ij|. Plain non-target logits: |G'_ij| <= |coef S_i|
          // (p_ij + delta |f'(t_i)|) max_j 1/|w_j| and sum_j p_ij <= 1, so the bound follows from
          // the rows' factors (row_bound) and the tile's largest 1/|w|; other policies sum |G'|.
          double abs_sum = 0;
          if constexpr (P::plain_non_target) abs_sum = row_bound * static_cast<double>(*std::max_element(w_inv, w_inv + n));
          double* abs_acc = P::plain_non_target ? nullptr : &abs_sum;
          for (Index i = 0; i < B; ++i) {
            T* c = K.row(i).data();
            if (!one_block)
              for (Index j = 0; j < n; ++j) c[j] = cosine_from_dot(c[j], w_inv[j]);
            const T S = policy.scale(ws.x_norm_(i));
            const Index target = ws.labels_(i) - ws.class_offset_ - g0;
            const double sz = span_gradient(policy, terms[i], S, c, n, target, ws.lse_(i), coef, w_inv, c, radial, abs_acc);
            if (feature_norm) dscale[i] += dscale_share(sz, coef, S);
          }
          // K now holds G' = dL/dc / |w_j|.
          accumulate_a_b(K, Wt, dx_part);
          auto dWt = dW.middleRows(g0, n);
          product_at_b(K, ws.xhat_, dWt);
          // dW_j = Q_j (G'^T X^)_j = (G'^T X^)_j - radial_j w^_j, w^_j formed element by
          // element (no 1/|w|^2 overflow).
          for (Index j = 0; j < n; ++j) dWt.row(j) -= radial[j] * (Wt.row(j) * w_inv[j]);
          // |dW_jk| <= sum_i |G'_ij| (1 + |c_ij|) <= 2 abs_sum, so a finite abs_sum far from the
          // overflow threshold proves the tile finite; only otherwise are its entries tested.
          if (!(abs_sum < static_cast<double>(std::numeric_limits<T>::max()) / 16))
            for (Index j = 0; j < n; ++j) overflow = overflow || !all_finite(dWt.row(j));
        }
      }
    }
    if (threads > 1) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
      for (Index i = 0; i < B; ++i)
        for (int t = 1; t < threads; ++t) acc.row(i) += ws.thread_dx_.row((t - 1) * B + i);
    }
    ws.dscale_.setZero(B);
    for (int t = 0; t < threads; ++t) ws.dscale_ += ws.thread_dscale_.segment(t * B, B);
    if (sharded) {
      comm.allreduce_sum(ws.dx_partial_.data(), ws.dx_partial_.size());
      if (feature_norm) comm.allreduce_sum(ws.dscale_.data(), B);
      dX = ws.dx_partial_;
    }
    if constexpr (has_learnable_margins<P>::value) {
      // dL/dm_k = sum_{i: y_i = k} dL/dz_iy S_i df/dm + dR/dm_k. Every rank knows t_i and lse_i,
      // so every rank computes the whole vector without communication.
      if (dmargins) {
        std::fill(dmargins, dmargins + ws.num_classes_, T(0));
        for (Index i = 0; i < B; ++i) {
          const T S = policy.scale(ws.x_norm_(i));
          const T p = std::exp(S * terms[i].target.value - ws.lse_(i));
          dmargins[ws.labels_(i)] += coef * (p - T(1)) * S * terms[i].dtarget_dmargin;
        }
        if (ws.regulariser_included_) {
          const bool over_batch = policy.regulariser_over_batch();
          add_margin_regulariser_gradient(grad_loss, policy.regulariser_weight(),
                                          over_batch ? ws.batch_classes_.data() : nullptr,
                                          over_batch ? ws.batch_class_count_ : ws.num_classes_, dmargins);
        }
      }
    }
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) reduction(|| : overflow)
#endif
    for (Index i = 0; i < B; ++i) {
      auto v = dX.row(i);
      const auto xh = ws.xhat_.row(i);
      v -= v.dot(xh) * xh;
      v *= ws.x_inv_norm_(i);
      if (feature_norm) v += ws.dscale_(i) * xh;
      overflow = overflow || !all_finite(v);
    }
    if constexpr (has_learnable_margins<P>::value)
      if (dmargins)
        for (Index k = 0; k < ws.num_classes_; ++k) overflow = overflow || !std::isfinite(dmargins[k]);
    // dW is local to a shard: a rank may throw alone here, after its last collective.
    if (overflow) fail_not_representable("a gradient");
  }

 private:
  // The cosines of tile [j0, j0 + n) of the current block: tiles are stored one after the
  // other, each a contiguous row-major B x n matrix, so a tile's product writes, and its row
  // pass reads, one contiguous stretch of memory.
  template <typename T>
  static Eigen::Map<RowMatrix<T>> tile_cosines(Workspace<T>& ws, Index j0, Index n) {
    return {ws.cosine_storage_.data() + ws.batch() * j0, ws.batch(), n};
  }

  // The policy's once-per-row terms (margined target, mining thresholds), computed once per
  // call into the workspace rather than once per row and tile.
  template <typename P, typename T = typename P::value_type>
  static const row_terms_t<P>* store_row_terms(const P& policy, Workspace<T>& ws) {
    using R = row_terms_t<P>;
    static_assert(std::is_trivially_copyable_v<R> && std::is_trivially_destructible_v<R> &&
                      alignof(R) <= alignof(std::max_align_t),
                  "marginloss: a policy's row_type must be trivially copyable (policies/common.hpp)");
    const Index B = ws.batch();
    const std::size_t slots = (static_cast<std::size_t>(B) * sizeof(R) + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
    if (ws.row_terms_.size() < slots) ws.row_terms_.resize(slots);
    auto* out = reinterpret_cast<R*>(ws.row_terms_.data());
    for (Index i = 0; i < B; ++i) new (out + i) R(policy.row(ws.target_cos_(i), ws.labels_(i)));
    return out;
  }
};

}  // namespace detail
MARGINLOSS_NAMESPACE_END

// marginloss: the k nearest prototypes of every class (the neighbour search of Hard Prototype
// Mining, sampling/hard_prototype_miner.hpp), and the cosine of two prototypes.
//
// Prototypes are the rows of W (C x D); their similarity is the cosine. nearest_prototypes()
// is exact and never forms the C x C matrix: for each tile of classes (tile_cols of them) and
// each block of rows (tile_rows), G = W_rows W_tile^T is formed in a per-thread buffer
// (256 x 2048 by default: 2 MiB in float) while the tile stays in cache, and each row's running
// top-k (sorted insertion; k is small) is updated from it. Threads share the row blocks of a
// tile; the result does not depend on the thread count. Cost O(C^2 D) flops and O(C k) memory
// besides the tiles (float, C = 100000, k = 10, -march=native: 26 CPU-seconds at D = 128, 79 at
// D = 512).
//
// Rounding and ties. The similarity of classes i and j is computed as
//   cos(w_i, w_j) = ((2^-e_i w_i) . (2^-e_j w_j)) * r_j * r_i,   r_j = 2^e_j / |w_j|,
// with 2^e_j the power of two just above |w_j| (frexp). Scaling a row by a power of two is
// exact, so the product of the scaled rows is the raw dot product times 2^-(e_i+e_j): it
// cannot overflow or underflow anywhere in the norm range the loss accepts (rows of norm 1e20
// or 1e-25 in float), and rows are ranked by (w_i . w_j) / |w_j| rounded once. Two classes
// whose dot product with w_i and whose norms are equal therefore tie exactly and the tie goes
// to the smaller class id (normalising before the product, as the loss does, would round the
// two differently and break such ties at random). Nothing is kept between calls; the result is
// returned: a W the loss would reject throws before anything is computed.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../detail/row_norms.hpp"
#include "../detail/validate.hpp"
#include "../errors.hpp"
#include "../types.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// The k nearest prototypes of every class: row j lists the k classes most similar to j (not j
/// itself), by decreasing cosine, ties to the smaller class id.
template <typename T>
struct NearestPrototypes {
  Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> ids;  ///< C x k class ids
  RowMatrix<T> similarities;  ///< C x k cosines, same layout as ids
};

/// The min(k, C - 1) nearest prototypes of every row of W (C x D, row-major, C >= 2), computed
/// exactly in tiles of tile_rows x tile_cols similarities per thread (see the top of this
/// header). Throws marginloss::invalid_argument on k < 1, a tile size < 1, C < 2, D = 0 or a row
/// the loss would reject (zero, non-finite, out of the accepted norm range).
template <typename DW, typename T = typename DW::Scalar>
NearestPrototypes<T> nearest_prototypes(const Eigen::MatrixBase<DW>& W, Index k, Index tile_rows = 256,
                                        Index tile_cols = 2048) {
  detail::check_row_major_matrix<DW, T>();
  const Index C = W.rows(), D = W.cols();
  if (k < 1) detail::fail("nearest_prototypes: k = ", k, " must be >= 1");
  if (tile_rows < 1 || tile_cols < 1)
    detail::fail("nearest_prototypes: tile_rows = ", tile_rows, " and tile_cols = ", tile_cols, " must be >= 1");
  if (C < 2) detail::fail("nearest_prototypes: W has ", C, " rows: there must be at least 2 classes");
  if (D < 1) detail::fail("nearest_prototypes: W has 0 columns");
  const Eigen::Ref<const RowMatrix<T>> Wr(W.derived());
  Vector<T> norm(C);
  detail::compute_row_norms<T>("W", Wr, norm.data(), static_cast<T*>(nullptr));  // throws on a row the loss rejects
  Vector<T> pow2(C), rest(C);  // 2^-e_j and r_j = 2^e_j / |w_j| (in (1, 2])
  for (Index j = 0; j < C; ++j) {
    int e = 0;
    const double n = static_cast<double>(norm(j));
    std::frexp(n, &e);
    pow2(j) = static_cast<T>(std::ldexp(1.0, -e));
    rest(j) = static_cast<T>(std::ldexp(1.0 / n, e));
  }
  const Index K = std::min(k, C - 1);
  NearestPrototypes<T> out;
  out.ids.resize(C, K);
  out.similarities.resize(C, K);
  const Index R = std::max<Index>(1, std::min(tile_rows, C)), Tc = std::max<Index>(1, std::min(tile_cols, C));
  const Index row_blocks = (C + R - 1) / R;
  std::vector<Index> count(static_cast<std::size_t>(C), 0);
#if defined(_OPENMP)
#pragma omp parallel
#endif
  {
    RowMatrix<T> G(R, Tc);   // one tile of scaled dot products per thread
    RowMatrix<T> A(R, D);    // the tile's rows, each scaled by its power of two
    RowMatrix<T> Bn(Tc, D);  // the tile's columns, likewise
    for (Index c0 = 0; c0 < C; c0 += Tc) {
      const Index nc = std::min(Tc, C - c0);
      Bn.topRows(nc).noalias() = pow2.segment(c0, nc).asDiagonal() * Wr.middleRows(c0, nc);
#if defined(_OPENMP)
#pragma omp for schedule(dynamic)
#endif
      for (Index b = 0; b < row_blocks; ++b) {
        const Index r0 = b * R, nr = std::min(R, C - r0);
        A.topRows(nr).noalias() = pow2.segment(r0, nr).asDiagonal() * Wr.middleRows(r0, nr);
        G.topLeftCorner(nr, nc).noalias() = A.topRows(nr) * Bn.topRows(nc).transpose();
        for (Index r = 0; r < nr; ++r) {
          const Index i = r0 + r;
          const T* g = G.row(r).data();
          Index* idx = out.ids.row(i).data();
          T* val = out.similarities.row(i).data();
          Index& n = count[static_cast<std::size_t>(i)];
          // Tiles and columns are scanned upwards, so ties keep the smaller class id.
          for (Index t = 0; t < nc; ++t) {
            const Index j = c0 + t;
            const T v = g[t] * rest(j);  // ranks row i by (w_i . w_j) / |w_j|
            if (n == K && !(v > val[K - 1])) continue;
            if (j == i || !(v == v)) continue;
            Index p = n < K ? n++ : K - 1;
            while (p > 0 && val[p - 1] < v) {
              val[p] = val[p - 1];
              idx[p] = idx[p - 1];
              --p;
            }
            val[p] = v;
            idx[p] = j;
          }
        }
      }
    }
  }
  for (Index i = 0; i < C; ++i) out.similarities.row(i) *= rest(i);  // (w_i . w_j) / |w_j| / |w_i|
  return out;
}

/// The cosine of rows j and c of W, in double, each row divided by its own norm first (no
/// overflow or underflow at any row norm the loss accepts); 0 when either row has no finite,
/// positive norm.
template <typename DW>
double prototype_cosine(const Eigen::MatrixBase<DW>& W, Index j, Index c) {
  const auto wj = W.derived().row(j), wc = W.derived().row(c);
  const double nj = detail::stable_row_norm(wj.data(), W.cols()), nc = detail::stable_row_norm(wc.data(), W.cols());
  if (!(nj > 0 && nc > 0 && std::isfinite(nj) && std::isfinite(nc))) return 0.0;
  double dot = 0;
  for (Index d = 0; d < W.cols(); ++d) dot += (static_cast<double>(wj(d)) / nj) * (static_cast<double>(wc(d)) / nc);
  return dot;
}

MARGINLOSS_NAMESPACE_END

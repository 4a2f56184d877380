#include "evaluate.hpp"

#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <cstdio>

namespace fashion_mnist {

Mat normalise_rows(const Mat& M) {
  Mat out = M;
  for (Eigen::Index i = 0; i < out.rows(); ++i) {
    const float norm = out.row(i).norm();
    if (norm > 0) out.row(i) /= norm;
  }
  return out;
}

OpenSet verify(const Mat& emb, const Eigen::VectorXi& label) {
  const Mat E = normalise_rows(emb);
  const Mat S = E * E.transpose();
  const Eigen::Index N = E.rows();
  std::vector<float> pos, neg;
  pos.reserve(N * N / 4);
  neg.reserve(N * N / 2);
  double intra = 0, inter = 0;
  for (Eigen::Index i = 0; i < N; ++i)
    for (Eigen::Index j = i + 1; j < N; ++j) {
      const float c = std::clamp(S(i, j), -1.f, 1.f);
      const double angle = std::acos(static_cast<double>(c)) * 180.0 / kPi;
      if (label(i) == label(j)) {
        pos.push_back(c);
        intra += angle;
      } else {
        neg.push_back(c);
        inter += angle;
      }
    }
  OpenSet r;
  if (pos.empty() || neg.empty()) return r;
  r.intra_deg = intra / static_cast<double>(pos.size());
  r.inter_deg = inter / static_cast<double>(neg.size());
  r.v = marginloss_examples::verify_scores(pos, neg);  // sorts pos and neg
  r.tar_1e2 = marginloss_examples::tar_at_far(pos, neg, 1e-2);
  r.tar_1e3 = marginloss_examples::tar_at_far(pos, neg, 1e-3);
  return r;
}

double closed_set_accuracy(const Mat& emb, const Mat& W, const Eigen::VectorXi& label, bool cosine) {
  const Mat scores = cosine ? Mat(emb * normalise_rows(W).transpose()) : Mat(emb * W.transpose());
  long correct = 0;
  for (Eigen::Index i = 0; i < scores.rows(); ++i) {
    Eigen::Index arg;
    scores.row(i).maxCoeff(&arg);
    correct += (arg == label(i));
  }
  return static_cast<double>(correct) / static_cast<double>(scores.rows());
}

void print_span_diagnostic(const char* loss, const Mat& emb, const Mat& W, const Eigen::VectorXi& label) {
  const Eigen::MatrixXf Wt = W.transpose();
  Eigen::HouseholderQR<Eigen::MatrixXf> qr(Wt);
  const Eigen::Index r = std::min(W.rows(), W.cols());
  const Eigen::MatrixXf Q = qr.householderQ() * Eigen::MatrixXf::Identity(W.cols(), r);  // D x r, orthonormal
  const Mat in_span = emb * Q * Q.transpose();
  const Mat complement = emb - in_span;
  const double share = complement.squaredNorm() / std::max(1e-30, static_cast<double>(emb.squaredNorm()));
  const OpenSet a = verify(in_span, label);
  std::printf("  %-10s span(W): AUC %.4f TAR@1e-3 %.4f | complement (%.1f%% of the energy): ", loss, a.v.auc, a.tar_1e3,
              100 * share);
  if (share > 1e-12) {  // D <= C: span(W) is usually the whole space
    const OpenSet b = verify(complement, label);
    std::printf("AUC %.4f TAR@1e-3 %.4f\n", b.v.auc, b.tar_1e3);
  } else {
    std::printf("empty\n");
  }
}

Row evaluate(const std::string& loss, Trained& t, std::chrono::steady_clock::time_point t0, const Subset& open_set,
             const Subset& closed_test, bool span) {
  Row r;
  r.loss = loss;
  const Mat open_emb = t.net->embed(open_set.images);
  r.open = verify(open_emb, open_set.label);
  if (span) print_span_diagnostic(loss.c_str(), open_emb, t.W, open_set.label);
  r.closed_acc = closed_set_accuracy(t.net->embed(closed_test.images), t.W, closed_test.label, loss != "softmax");
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  %-10s AUC %.4f  TAR@1e-2 %.4f  TAR@1e-3 %.4f  closed acc %.4f  (%.1fs)\n\n", loss.c_str(),
              r.open.v.auc, r.open.tar_1e2, r.open.tar_1e3, r.closed_acc, r.seconds);
  return r;
}

}  // namespace fashion_mnist

// The subset loss: equal to the loss on W restricted to the active classes, built explicitly.
#include <doctest/doctest.h>

#include <marginloss/sampling/subset.hpp>

#include "../support.hpp"

using namespace mltest;

namespace {

struct Subset {
  Case c;
  ml::IndexVector active;
  Eigen::VectorXi local;
  Mat<double> Wsub;
};

// B samples, C classes; the active set holds the batch's classes and some others, shuffled.
Subset make_subset(Index B, Index D, Index C, Index extra, std::uint64_t seed) {
  Subset s;
  s.c = random_case(B, D, C, seed);
  SplitMix64 rng(seed * 7 + 1);
  std::vector<Index> act;
  for (Index i = 0; i < B; ++i)
    if (std::find(act.begin(), act.end(), Index(s.c.labels(i))) == act.end()) act.push_back(s.c.labels(i));
  const Index want = std::min(C, static_cast<Index>(act.size()) + extra);
  while (static_cast<Index>(act.size()) < want) {
    const Index k = static_cast<Index>(rng.next() % static_cast<std::uint64_t>(C));
    if (std::find(act.begin(), act.end(), k) == act.end()) act.push_back(k);
  }
  for (std::size_t i = act.size(); i > 1; --i) std::swap(act[i - 1], act[rng.next() % i]);
  s.active.resize(static_cast<Index>(act.size()));
  for (Index a = 0; a < s.active.size(); ++a) s.active(a) = act[static_cast<std::size_t>(a)];
  s.local.resize(B);
  for (Index i = 0; i < B; ++i)
    s.local(i) = static_cast<int>(std::find(act.begin(), act.end(), Index(s.c.labels(i))) - act.begin());
  s.Wsub.resize(s.active.size(), D);
  for (Index a = 0; a < s.active.size(); ++a) s.Wsub.row(a) = s.c.W.row(s.active(a));
  return s;
}

// The ActiveSet of active class ids and int local labels.
ml::ActiveSet set_of(const ml::IndexVector& active, const Eigen::VectorXi& local) {
  return {active, local.cast<Index>()};
}

bool in_set(const ml::IndexVector& a, Index k) { return (a.array() == k).any(); }

Eigen::VectorXd gather(const Eigen::VectorXd& m, const ml::IndexVector& a) {
  Eigen::VectorXd out(a.size());
  for (Index i = 0; i < a.size(); ++i) out(i) = m(a(i));
  return out;
}

// subset vs explicit restriction, dW rows outside untouched (sentinel) or zeroed.
template <typename P, typename Q>
void check_policy(const P& policy, const Q& restricted, const Subset& s) {
  const Index B = s.c.X.rows(), D = s.c.X.cols(), C = s.c.W.rows();
  const auto ref = ml::forward_backward(restricted, s.c.X, s.Wsub, s.local);
  ml::SubsetWorkspace<double> sws;
  Mat<double> dX(B, D), dW = Mat<double>::Constant(C, D, 7.0);
  const double loss = ml::forward_backward(policy, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW}, sws);
  CHECK(rel_error(loss, ref.loss) < 1e-12);
  CHECK(rel_error(dX, ref.dX) < 1e-12);
  for (Index j = 0; j < C; ++j) {
    if (in_set(s.active, j)) continue;
    CHECK((dW.row(j).array() == 7.0).all());
  }
  for (Index a = 0; a < s.active.size(); ++a) CHECK(rel_error(dW.row(s.active(a)), ref.dW.row(a)) < 1e-12);
  ml::SubsetOptions zero;
  zero.zero_inactive_rows = true;
  const double loss2 = ml::forward_backward(policy, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW}, sws, zero);
  CHECK(loss2 == loss);
  for (Index j = 0; j < C; ++j)
    if (!in_set(s.active, j)) CHECK((dW.row(j).array() == 0.0).all());
  for (Index a = 0; a < s.active.size(); ++a) CHECK(rel_error(dW.row(s.active(a)), ref.dW.row(a)) < 1e-12);
}

}  // namespace

TEST_CASE("subset loss equals the loss on the explicitly restricted W, for several policies") {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    const Subset s = make_subset(8, 6, 30, 5, seed);
    REQUIRE(s.active.size() < 30);
    check_policy(ml::CosFace<double>{30, 0.35}, ml::CosFace<double>{30, 0.35}, s);
    check_policy(ml::ArcFace<double>{32, 0.5}, ml::ArcFace<double>{32, 0.5}, s);
    check_policy(ml::SphereFace<double>{}, ml::SphereFace<double>{}, s);
    check_policy(ml::MVSoftmax<double>{}, ml::MVSoftmax<double>{}, s);
    ml::CurricularFace<double> cf;
    cf.tau = 0.3;
    cf.update_tau_in_forward = false;  // the same tau for the subset and the reference
    check_policy(cf, cf, s);
    Eigen::VectorXd m(30);
    for (Index k = 0; k < 30; ++k) m(k) = 0.1 + 0.01 * static_cast<double>(k);
    const Eigen::VectorXd ma = gather(m, s.active);
    check_policy(ml::class_margins(ml::ArcFace<double>{32, 0.0}, m), ml::class_margins(ml::ArcFace<double>{32, 0.0}, ma), s);
  }
}

TEST_CASE("subset loss with class blocks in the engine, and an ActiveSet") {
  const Subset s = make_subset(6, 5, 40, 20, 9);
  ml::ActiveSet set;
  set.classes = s.active;
  set.local_labels = s.local.cast<Index>();
  ml::SubsetWorkspace<double> sws;
  ml::SubsetOptions o;
  o.engine.class_block = 4;
  Mat<double> dX(6, 5), dW = Mat<double>::Zero(40, 5);
  const ml::CosFace<double> p{30, 0.35};
  const double loss = ml::forward_backward(p, s.c.X, s.c.W, set, {dX, dW}, sws, o);
  const auto ref = ml::forward_backward(p, s.c.X, s.Wsub, s.local);
  CHECK(rel_error(loss, ref.loss) < 1e-12);
  CHECK(rel_error(dX, ref.dX) < 1e-12);
  CHECK(sws.engine().class_block() == 4);
  CHECK(rel_error(Mat<double>(sws.gathered()), s.Wsub) == 0.0);
}

TEST_CASE("subset loss on every class, in any order, is the full loss") {
  const Case c = random_case(7, 5, 11, 4);
  ml::IndexVector all(11);
  all << 3, 0, 10, 7, 1, 9, 2, 8, 4, 6, 5;
  Eigen::VectorXi local(7);
  for (Index i = 0; i < 7; ++i) local(i) = static_cast<int>(std::find(all.data(), all.data() + 11, Index(c.labels(i))) - all.data());
  ml::SubsetWorkspace<double> sws;
  Mat<double> dX(7, 5), dW(11, 5);
  const ml::ArcFace<double> p{64, 0.5};
  const auto ref = ml::forward_backward(p, c.X, c.W, c.labels);
  CHECK(rel_error(ml::forward_backward(p, c.X, c.W, set_of(all, local), {dX, dW}, sws), ref.loss) < 1e-12);
  CHECK(rel_error(dX, ref.dX) < 1e-12);
  CHECK(rel_error(dW, ref.dW) < 1e-12);
  for (auto scope : {ml::RegulariserScope::all_classes, ml::RegulariserScope::batch_classes}) {
    Eigen::VectorXd m(11);
    for (Index k = 0; k < 11; ++k) m(k) = 0.3 + 0.01 * static_cast<double>(k);
    const ml::AdaptiveMargin<double> am{30, m, 7.0, scope};
    const auto r = ml::forward_backward(am, c.X, c.W, c.labels);
    Eigen::VectorXd dm(11);
    CHECK(rel_error(ml::forward_backward(am, c.X, c.W, set_of(all, local), {dX, dW, dm}, sws), r.loss) < 1e-12);
    CHECK(rel_error(dW, r.dW) < 1e-12);
    CHECK(rel_error(dm, r.dmargins) < 1e-12);
  }
}

TEST_CASE("AdaptiveMargin on a subset: the three regulariser readings") {
  const Subset s = make_subset(9, 6, 25, 6, 5);
  const Index B = 9, D = 6, C = 25, A = s.active.size();
  Eigen::VectorXd m(C);
  SplitMix64 rng(3);
  for (Index k = 0; k < C; ++k) m(k) = 0.3 + 0.1 * rng.uniform();
  const double s_ = 30, lambda = 7;
  const Eigen::VectorXd ma = gather(m, s.active);
  ml::SubsetWorkspace<double> sws;
  Mat<double> dX(B, D), dW = Mat<double>::Constant(C, D, 7.0);
  Eigen::VectorXd dm = Eigen::VectorXd::Constant(C, 5.0);

  SUBCASE("all_classes, as_policy: CE on the subset + R over all C margins") {
    const ml::AdaptiveMargin<double> p{s_, m, lambda, ml::RegulariserScope::all_classes};
    const auto ce = ml::forward_backward(ml::AdaptiveMargin<double>{s_, ma, 0.0}, s.c.X, s.Wsub, s.local);
    const double loss = ml::forward_backward(p, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW, dm}, sws);
    CHECK(rel_error(loss, ce.loss - lambda * m.mean()) < 1e-12);
    CHECK(rel_error(dX, ce.dX) < 1e-12);
    for (Index j = 0; j < C; ++j) {
      if (in_set(s.active, j)) continue;
      CHECK(dm(j) == doctest::Approx(-lambda / C).epsilon(1e-14));
      CHECK((dW.row(j).array() == 7.0).all());
    }
    for (Index a = 0; a < A; ++a) {
      CHECK(rel_error(dm(s.active(a)), ce.dmargins(a) - lambda / C) < 1e-12);
      CHECK(rel_error(dW.row(s.active(a)), ce.dW.row(a)) < 1e-12);
    }
  }
  SUBCASE("batch_classes, as_policy: the same policy on the restricted W") {
    const ml::AdaptiveMargin<double> p{s_, m, lambda, ml::RegulariserScope::batch_classes};
    const auto ref = ml::forward_backward(ml::AdaptiveMargin<double>{s_, ma, lambda, ml::RegulariserScope::batch_classes},
                                          s.c.X, s.Wsub, s.local);
    const double loss = ml::forward_backward(p, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW, dm}, sws);
    CHECK(rel_error(loss, ref.loss) < 1e-12);
    for (Index j = 0; j < C; ++j)
      if (!in_set(s.active, j)) CHECK(dm(j) == 0.0);
    for (Index a = 0; a < A; ++a) CHECK(rel_error(dm(s.active(a)), ref.dmargins(a)) < 1e-12);
  }
  SUBCASE("active_classes: R over the active margins only") {
    const ml::AdaptiveMargin<double> p{s_, m, lambda, ml::RegulariserScope::all_classes};
    ml::SubsetOptions o;
    o.regulariser = ml::SubsetRegulariser::active_classes;
    const auto ref = ml::forward_backward(ml::AdaptiveMargin<double>{s_, ma, lambda}, s.c.X, s.Wsub, s.local);
    const double loss = ml::forward_backward(p, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW, dm}, sws, o);
    CHECK(rel_error(loss, ref.loss) < 1e-12);
    CHECK(rel_error(dX, ref.dX) < 1e-12);
    for (Index j = 0; j < C; ++j)
      if (!in_set(s.active, j)) CHECK(dm(j) == 0.0);
    for (Index a = 0; a < A; ++a) {
      CHECK(rel_error(dm(s.active(a)), ref.dmargins(a)) < 1e-12);
      CHECK(rel_error(dW.row(s.active(a)), ref.dW.row(a)) < 1e-12);
    }
  }
}

TEST_CASE("AdaptiveMargin subset loss: dX, dW (all rows) and dmargins (all C) against finite differences") {
  Subset s = make_subset(5, 4, 12, 3, 8);
  const Index C = 12;
  Eigen::VectorXd m0(C);
  for (Index k = 0; k < C; ++k) m0(k) = 0.2 + 0.02 * static_cast<double>(k);
  for (auto mode : {ml::SubsetRegulariser::as_policy, ml::SubsetRegulariser::active_classes}) {
    for (auto scope : {ml::RegulariserScope::all_classes, ml::RegulariserScope::batch_classes}) {
      Eigen::VectorXd m = m0;
      const ml::AdaptiveMargin<double> p{20, m, 5.0, scope};  // views m, changed in place below
      ml::SubsetOptions o;
      o.regulariser = mode;
      o.zero_inactive_rows = true;
      ml::SubsetWorkspace<double> sws;
      Mat<double> dX(5, 4), dW(C, 4), gX(5, 4), gW(C, 4);
      Eigen::VectorXd dm(C), gm(C);
      ml::forward_backward(p, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW, dm}, sws, o);
      auto loss = [&] {
        return ml::forward_backward(p, s.c.X, s.c.W, set_of(s.active, s.local), {gX, gW, gm}, sws, o);
      };
      CHECK(rel_error(dX, fd_gradient(s.c.X, loss)) < 1e-6);
      CHECK(rel_error(dW, fd_gradient(s.c.W, loss)) < 1e-6);
      Mat<double> mm = m.transpose();
      auto loss_m = [&] {
        m = mm.transpose();
        return loss();
      };
      const Mat<double> fd = fd_gradient(mm, loss_m);
      CHECK(rel_error(Mat<double>(dm.transpose()), fd) < 1e-6);
    }
  }
}

TEST_CASE("subset loss errors") {
  const Subset s = make_subset(4, 3, 10, 2, 2);
  ml::SubsetWorkspace<double> sws;
  Mat<double> dX(4, 3), dW(10, 3);
  const ml::CosFace<double> p;
  ml::IndexVector bad = s.active;
  bad(0) = 10;
  CHECK_THROWS_WITH_AS(ml::forward_backward(p, s.c.X, s.c.W, set_of(bad, s.local), {dX, dW}, sws),
                       doctest::Contains("active[0] = 10 is out of range"), ml::invalid_argument);
  bad = s.active;
  bad(1) = bad(0);
  CHECK_THROWS_WITH_AS(ml::forward_backward(p, s.c.X, s.c.W, set_of(bad, s.local), {dX, dW}, sws),
                       doctest::Contains("appears twice"), ml::invalid_argument);
  Eigen::VectorXi l = s.local;
  l(0) = static_cast<int>(s.active.size());
  CHECK_THROWS_WITH_AS(ml::forward_backward(p, s.c.X, s.c.W, set_of(s.active, l), {dX, dW}, sws),
                       doctest::Contains("out of range"), ml::invalid_argument);
  Mat<double> dWbad(9, 3);
  CHECK_THROWS_WITH_AS(ml::forward_backward(p, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dWbad}, sws),
                       doctest::Contains("dW is 9x3"), ml::invalid_argument);
  // After a failed call, a good one still works (the duplicate marks were cleared).
  CHECK_NOTHROW(ml::forward_backward(p, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW}, sws));
  Eigen::VectorXd dm(9);
  Eigen::VectorXd m10 = Eigen::VectorXd::Constant(10, 0.3);
  CHECK_THROWS_WITH_AS(ml::forward_backward(ml::AdaptiveMargin<double>{30, m10, 1.0}, s.c.X, s.c.W,
                                            set_of(s.active, s.local), {dX, dW, dm}, sws),
                       doctest::Contains("dmargins has 9 entries"), ml::invalid_argument);
  // Every class's margin is checked, the inactive ones too (the caller's whole vector).
  Index inactive = 0;
  while (in_set(s.active, inactive)) ++inactive;
  Eigen::VectorXd dm10(10);
  m10(inactive) = std::numeric_limits<double>::quiet_NaN();
  const std::string not_finite = "marginloss: AdaptiveMargin: margins(" + std::to_string(inactive) + ") = nan must be finite";
  const std::string not_valid = "marginloss: ArcFace: margins(" + std::to_string(inactive) +
                                ") = 4 is not a valid margin (ArcFace: m = 4 must be < pi)";
  CHECK_THROWS_WITH_AS(ml::forward_backward(ml::AdaptiveMargin<double>{30, m10, 1.0}, s.c.X, s.c.W,
                                            set_of(s.active, s.local), {dX, dW, dm10}, sws),
                       not_finite.c_str(), ml::invalid_argument);
  m10(inactive) = 4;
  CHECK_THROWS_WITH_AS(ml::forward_backward(ml::class_margins(ml::ArcFace<double>{}, m10), s.c.X, s.c.W,
                                            set_of(s.active, s.local), {dX, dW}, sws),
                       not_valid.c_str(), ml::invalid_argument);
  const Eigen::VectorXd m9 = Eigen::VectorXd::Constant(9, 0.3);
  CHECK_THROWS_WITH_AS(ml::forward_backward(ml::class_margins(ml::ArcFace<double>{}, m9), s.c.X, s.c.W,
                                            set_of(s.active, s.local), {dX, dW}, sws),
                       "marginloss: ArcFace: margins has 9 entries but there are 10 classes", ml::invalid_argument);
  // A value changed in place is seen by the next call (the policy views m10).
  m10(inactive) = 0.3;
  const ml::AdaptiveMargin<double> am{30, m10, 1.0};
  const double l1 = ml::forward_backward(am, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW, dm10}, sws);
  m10(s.active(0)) = 0.1;
  const double l2 = ml::forward_backward(am, s.c.X, s.c.W, set_of(s.active, s.local), {dX, dW, dm10}, sws);
  const Eigen::VectorXd copy = m10;
  CHECK(l2 != l1);
  CHECK(l2 == ml::forward_backward(ml::AdaptiveMargin<double>{30, copy, 1.0}, s.c.X, s.c.W, set_of(s.active, s.local),
                                   {dX, dW, dm10}, sws));
}

TEST_CASE("subset loss in float -- SubsetWorkspace buffers are reused for smaller active sets") {
  const Subset s = make_subset(6, 5, 40, 20, 11);
  const Mat<float> X = s.c.X.cast<float>(), W = s.c.W.cast<float>(), Wsub = s.Wsub.cast<float>();
  ml::SubsetWorkspace<float> sws;
  Mat<float> dX(6, 5), dW = Mat<float>::Zero(40, 5);
  const ml::CosFace<float> p{30, 0.35f};
  const float loss = ml::forward_backward(p, X, W, set_of(s.active, s.local), {dX, dW}, sws);
  const auto ref = ml::forward_backward(p, X, Wsub, s.local);
  CHECK(loss == doctest::Approx(ref.loss).epsilon(1e-5));
  CHECK(rel_error(dX.cast<double>(), ref.dX.cast<double>()) < 1e-5);
  const float* gathered = sws.gathered().data();
  // A smaller set: the batch's classes only.
  std::vector<Index> act;
  for (Index i = 0; i < 6; ++i)
    if (std::find(act.begin(), act.end(), Index(s.c.labels(i))) == act.end()) act.push_back(s.c.labels(i));
  ml::IndexVector small(static_cast<Index>(act.size()));
  for (Index a = 0; a < small.size(); ++a) small(a) = act[static_cast<std::size_t>(a)];
  Eigen::VectorXi local(6);
  for (Index i = 0; i < 6; ++i) local(i) = static_cast<int>(std::find(act.begin(), act.end(), Index(s.c.labels(i))) - act.begin());
  ml::forward_backward(p, X, W, set_of(small, local), {dX, dW}, sws);
  CHECK(sws.gathered().data() == gathered);
  CHECK(sws.gathered().rows() == small.size());
}

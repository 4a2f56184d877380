// Hard Prototype Mining: neighbours against brute force, the active set, the queue rule.
#include <doctest/doctest.h>

#include <marginloss/sampling/hard_prototype_miner.hpp>

#include "../support.hpp"

using namespace mltest;

namespace {

// Brute force, ranking as the miner does by (w_i . w_j) / |w_j| (the same order as the cosine),
// descending, then class id ascending; similarities reported as that times 1/|w_i|.
std::vector<std::vector<Index>> brute_force(const Mat<double>& W, Index K, std::vector<std::vector<double>>* sims = nullptr) {
  const Index C = W.rows();
  Eigen::VectorXd inv(C);
  for (Index j = 0; j < C; ++j) inv(j) = 1.0 / std::sqrt(W.row(j).squaredNorm());
  std::vector<std::vector<Index>> out(static_cast<std::size_t>(C));
  if (sims) sims->assign(static_cast<std::size_t>(C), {});
  for (Index i = 0; i < C; ++i) {
    std::vector<std::pair<double, Index>> all;
    for (Index j = 0; j < C; ++j)
      if (j != i) all.push_back({W.row(i).dot(W.row(j)) * inv(j), j});
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (Index r = 0; r < K; ++r) {
      out[static_cast<std::size_t>(i)].push_back(all[static_cast<std::size_t>(r)].second);
      if (sims) (*sims)[static_cast<std::size_t>(i)].push_back(all[static_cast<std::size_t>(r)].first * inv(i));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("HPM neighbours equal a brute-force search -- exact ties go to the smaller class id") {
  // Small integer entries: every dot product is exact, many similarities tie exactly, and
  // duplicated rows have similarity 1 with each other.
  const Index C = 500, D = 16, K = 5;
  SplitMix64 rng(17);
  Mat<double> W(C, D);
  for (Index k = 0; k < W.size(); ++k) W.data()[k] = static_cast<double>(static_cast<int>(rng.next() % 5) - 2);
  for (Index j = 0; j < 40; ++j) W.row(400 + j) = W.row(j * 3);  // duplicates
  for (Index j = 0; j < C; ++j)
    if (W.row(j).squaredNorm() == 0) W(j, 0) = 1;
  const auto expect = brute_force(W, K);
  for (Index tile : {Index(0), Index(37)}) {  // one tile; tiles of 37 rows x 101 columns
    ml::HardPrototypeMinerOptions o;
    o.k = K;
    if (tile > 0) {
      o.tile_rows = tile;
      o.tile_cols = 101;
    } else {
      o.tile_rows = o.tile_cols = C;
    }
    ml::HardPrototypeMiner<double> hpm(o);
    hpm.build(W);
    REQUIRE(hpm.neighbours().rows() == C);
    REQUIRE(hpm.neighbours().cols() == K);
    Index mismatches = 0;
    for (Index i = 0; i < C; ++i)
      for (Index r = 0; r < K; ++r) mismatches += hpm.neighbours()(i, r) != expect[static_cast<std::size_t>(i)][static_cast<std::size_t>(r)];
    CHECK(mismatches == 0);
    CHECK(hpm.neighbours()(400, 0) == 0);  // its duplicate, similarity 1
    CHECK(hpm.neighbour_similarities()(400, 0) == doctest::Approx(1.0));
  }
}

TEST_CASE("HPM neighbours on real-valued W: the same sets up to rounding-level near-ties, float and double") {
  const Index C = 500, D = 16, K = 5;
  SplitMix64 rng(3);
  Mat<double> W(C, D);
  for (Index k = 0; k < W.size(); ++k) W.data()[k] = rng.normal();
  std::vector<std::vector<double>> sims;
  const auto expect = brute_force(W, K, &sims);
  ml::HardPrototypeMinerOptions o;
  o.k = K;
  o.tile_rows = 64;
  o.tile_cols = 128;
  ml::HardPrototypeMiner<double> hpm(o);
  hpm.build(W);
  ml::HardPrototypeMiner<float> hpmf(o);
  const Mat<float> Wf = W.cast<float>();
  hpmf.build(Wf);
  Index exact = 0, exact_f = 0;
  for (Index i = 0; i < C; ++i)
    for (Index r = 0; r < K; ++r) {
      const double want = sims[static_cast<std::size_t>(i)][static_cast<std::size_t>(r)];
      CHECK(std::fabs(hpm.neighbour_similarities()(i, r) - want) < 1e-12);
      CHECK(std::fabs(hpmf.neighbour_similarities()(i, r) - want) < 1e-5);
      exact += hpm.neighbours()(i, r) == expect[static_cast<std::size_t>(i)][static_cast<std::size_t>(r)];
      exact_f += hpmf.neighbours()(i, r) == expect[static_cast<std::size_t>(i)][static_cast<std::size_t>(r)];
    }
  CHECK(exact == C * K);
  CHECK(exact_f >= C * K - 10);  // float: only near-ties may swap
}

TEST_CASE("HPM active set: labels first, then queue members in rounds -- the cap keeps every label") {
  const Index C = 60, D = 8;
  SplitMix64 rng(5);
  Mat<double> W(C, D);
  for (Index k = 0; k < W.size(); ++k) W.data()[k] = rng.normal();
  ml::HardPrototypeMinerOptions o;
  o.k = 4;
  o.h = -2;  // keep every neighbour
  ml::HardPrototypeMiner<double> hpm(o);
  hpm.build(W);
  Eigen::VectorXi labels(7);
  labels << 12, 5, 12, 40, 5, 33, 7;
  const std::vector<Index> distinct = {12, 5, 40, 33, 7};
  std::vector<Index> expect = distinct;
  for (Index r = 0; r < 8; ++r)
    for (Index y : distinct) {
      const auto q = hpm.queue(y);
      REQUIRE(q.size() == 4);
      if (r < q.size() && std::find(expect.begin(), expect.end(), q(r)) == expect.end()) expect.push_back(q(r));
    }
  const ml::ActiveSet& a = hpm.active_set(labels);
  REQUIRE(a.size() == static_cast<Index>(expect.size()));
  for (Index k = 0; k < a.size(); ++k) CHECK(a.classes(k) == expect[static_cast<std::size_t>(k)]);
  for (Index i = 0; i < 7; ++i) CHECK(a.classes(a.local_labels(i)) == labels(i));

  ml::HardPrototypeMinerOptions oc = o;
  oc.max_active = 8;  // 5 labels + the first 3 queue members of the rounds
  ml::HardPrototypeMiner<double> capped(oc);
  capped.build(W);
  const ml::ActiveSet ac = capped.active_set(labels);
  REQUIRE(ac.size() == 8);
  for (Index k = 0; k < 8; ++k) CHECK(ac.classes(k) == expect[static_cast<std::size_t>(k)]);
  oc.max_active = 3;  // fewer than the labels: the labels alone
  ml::HardPrototypeMiner<double> tight(oc);
  tight.build(W);
  const ml::ActiveSet at = tight.active_set(labels);
  REQUIRE(at.size() == 5);
  for (Index k = 0; k < 5; ++k) CHECK(at.classes(k) == distinct[static_cast<std::size_t>(k)]);
  for (Index i = 0; i < 7; ++i) CHECK(at.classes(at.local_labels(i)) == labels(i));
  // The active set feeds the subset loss directly.
  const Case c = random_case(7, D, C, 2);
  ml::SubsetWorkspace<double> sws;
  Mat<double> dX(7, D), dW = Mat<double>::Zero(C, D);
  CHECK(std::isfinite(ml::forward_backward(ml::CosFace<double>{}, c.X, W, a, {dX, dW}, sws)));
}

TEST_CASE("HPM queue rule on a constructed case") {
  // Six classes in 3-D; prototype similarities to class 2 = (0, 1, 0):
  //   w0 (1, 0, 0): 0      w1 (0.6, 0.8, 0): 0.8    w3 (0, 0.6, 0.8): 0.6
  //   w4 (0, -0.6, 0.8): -0.6                       w5 (0.8, 0.6, 0): 0.6
  Mat<double> W(6, 3);
  W << 1, 0, 0, 0.6, 0.8, 0, 0, 1, 0, 0, 0.6, 0.8, 0, -0.6, 0.8, 0.8, 0.6, 0;
  ml::HardPrototypeMinerOptions o;
  o.k = 1;
  o.queue_capacity = 3;
  o.h = 0.1;
  ml::HardPrototypeMiner<double> hpm(o);
  hpm.build(W);
  REQUIRE(hpm.queue(2).size() == 1);
  CHECK(hpm.queue(2)(0) == 1);  // its nearest prototype (0.8)

  ml::ActiveSet set;
  set.classes.resize(6);
  set.classes << 2, 0, 1, 3, 4, 5;  // local column a is class classes(a)
  set.local_labels.resize(2);
  set.local_labels << 0, 0;  // both samples are of class 2
  Mat<double> scores(2, 6);
  // Sample 0: its label scores highest -> no update. Sample 1: classes 3 (0.7), 4 (0.9) and
  // 5 (0.5) score above the target 0.4, class 0 (0.3) and 1 (0.1) below.
  scores << 0.9, 0.2, 0.8, 0.1, 0.5, 0.3,
            0.4, 0.3, 0.1, 0.7, 0.9, 0.5;
  hpm.update_from_scores(scores, W, set);
  // Pushed in ascending score so the highest ends first: 5, then 3, (4 fails h: -0.6).
  // Capacity 3: [3, 5, 1].
  ml::IndexVector q = hpm.queue(2);
  REQUIRE(q.size() == 3);
  CHECK(q(0) == 3);
  CHECK(q(1) == 5);
  CHECK(q(2) == 1);
  // Sample 1 confuses class 1 now: it moves to the front, nothing is duplicated.
  scores.row(1) << 0.4, 0.3, 0.6, 0.1, 0.2, 0.3;
  hpm.update_from_scores(scores, W, set);
  q = hpm.queue(2);
  REQUIRE(q.size() == 3);
  CHECK(q(0) == 1);
  CHECK(q(1) == 3);
  CHECK(q(2) == 5);
  // A full queue drops its back: push 0 after making it similar enough (h below 0).
  hpm.set_threshold(-0.1);
  scores.row(1) << 0.4, 0.5, 0.1, 0.1, 0.2, 0.3;
  hpm.update_from_scores(scores, W, set);
  q = hpm.queue(2);
  REQUIRE(q.size() == 3);
  CHECK(q(0) == 0);
  CHECK(q(1) == 1);
  CHECK(q(2) == 3);
  // Raising h prunes: at h = 0.7 only class 1 (0.8) stays.
  hpm.set_threshold(0.7);
  hpm.prune_all(W);
  q = hpm.queue(2);
  REQUIRE(q.size() == 1);
  CHECK(q(0) == 1);
  // Ties with the target count as correct (no push).
  hpm.set_threshold(-1);
  scores.row(1) << 0.4, 0.4, 0.1, 0.1, 0.4, 0.3;
  hpm.update_from_scores(scores, W, set);
  CHECK(hpm.queue(2).size() == 1);
}

TEST_CASE("HPM update() from raw X and W matches update_from_scores() on the cosines -- refresh and step") {
  const Index C = 80, D = 10, B = 16;
  SplitMix64 rng(8);
  Mat<double> W(C, D), X(B, D);
  for (Index k = 0; k < W.size(); ++k) W.data()[k] = rng.normal();
  for (Index k = 0; k < X.size(); ++k) X.data()[k] = rng.normal();
  Eigen::VectorXi labels(B);
  for (Index i = 0; i < B; ++i) labels(i) = static_cast<int>(rng.next() % C);
  ml::HardPrototypeMinerOptions o;
  o.k = 3;
  o.h = -1;
  o.refresh_every = 2;
  ml::HardPrototypeMiner<double> a(o), b(o);
  CHECK(a.step(W));  // builds
  b.build(W);
  const ml::ActiveSet set = a.active_set(labels);
  a.update(X, W, set);
  Mat<double> cos(B, set.size());
  for (Index i = 0; i < B; ++i)
    for (Index k = 0; k < set.size(); ++k)
      cos(i, k) = X.row(i).normalized().dot(W.row(set.classes(k)).normalized());
  b.update_from_scores(cos, W, set);
  Index pushed = 0;
  for (Index j = 0; j < C; ++j) {
    REQUIRE(a.queue(j).size() == b.queue(j).size());
    CHECK(a.queue(j) == b.queue(j));
    pushed += a.queue(j).size() > 3;
  }
  CHECK(pushed > 0);  // random data: some samples are misclassified
  CHECK_FALSE(a.step(W));
  CHECK(a.step(W));  // refresh after 2 steps: neighbours first, mined members kept
  for (Index j = 0; j < C; ++j) {
    const auto q = a.queue(j);
    std::vector<Index> want;
    for (Index r = 0; r < 3; ++r) want.push_back(a.neighbours()(j, r));
    for (Index r = 0; r < b.queue(j).size(); ++r)
      if (std::find(want.begin(), want.end(), b.queue(j)(r)) == want.end() && want.size() < 6) want.push_back(b.queue(j)(r));
    REQUIRE(q.size() == static_cast<Index>(want.size()));
    for (Index r = 0; r < q.size(); ++r) CHECK(q(r) == want[static_cast<std::size_t>(r)]);
  }
}

TEST_CASE("HPM errors") {
  ml::HardPrototypeMinerOptions o;
  o.k = 0;
  CHECK_THROWS_AS(ml::HardPrototypeMiner<double>{o}, ml::invalid_argument);
  ml::HardPrototypeMiner<double> hpm;
  Eigen::VectorXi l(1);
  l << 0;
  CHECK_THROWS_WITH_AS(hpm.active_set(l), doctest::Contains("build"), ml::invalid_argument);
  Mat<double> W = Mat<double>::Ones(4, 3);
  W(2, 0) = 0;
  W.row(3).setZero();
  CHECK_THROWS_WITH_AS(hpm.build(W), doctest::Contains("W row 3 has zero norm"), ml::invalid_argument);
  W(3, 1) = 1;
  hpm.build(W);
  CHECK(hpm.k() == 3);  // k = 10 > C - 1
  l << 4;
  CHECK_THROWS_WITH_AS(hpm.active_set(l), doctest::Contains("out of range"), ml::invalid_argument);
}

TEST_CASE("nearest_prototypes: hand-computed neighbours, k clamped to C - 1, bad arguments throw") {
  // Rows of norm 1, 1 and 1000: cos(0,1) = 0.8, cos(0,2) = 0, cos(1,2) = 0.6.
  Mat<double> W(3, 2);
  W << 1, 0, 0.8, 0.6, 0, 1000;
  const auto n = ml::nearest_prototypes(W, 5);
  REQUIRE(n.ids.rows() == 3);
  REQUIRE(n.ids.cols() == 2);
  CHECK(n.ids(0, 0) == 1);
  CHECK(n.ids(0, 1) == 2);
  CHECK(n.ids(1, 0) == 0);
  CHECK(n.ids(1, 1) == 2);
  CHECK(n.ids(2, 0) == 1);
  CHECK(n.ids(2, 1) == 0);
  CHECK(n.similarities(0, 0) == doctest::Approx(0.8).epsilon(1e-15));
  CHECK(std::fabs(n.similarities(0, 1)) < 1e-15);
  CHECK(n.similarities(1, 1) == doctest::Approx(0.6).epsilon(1e-15));
  CHECK(n.similarities(2, 0) == doctest::Approx(0.6).epsilon(1e-15));
  CHECK(ml::prototype_cosine(W, 1, 2) == doctest::Approx(0.6).epsilon(1e-15));
  CHECK_THROWS_WITH_AS(ml::nearest_prototypes(W, 0), doctest::Contains("k = 0"), ml::invalid_argument);
  CHECK_THROWS_WITH_AS(ml::nearest_prototypes(W, 1, 0), doctest::Contains("tile_rows"), ml::invalid_argument);
  const Mat<double> one = W.topRows(1);
  CHECK_THROWS_WITH_AS(ml::nearest_prototypes(one, 1), doctest::Contains("at least 2"), ml::invalid_argument);
  Mat<double> bad = W;
  bad(1, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(ml::nearest_prototypes(bad, 1), ml::invalid_argument);
  bad.row(1).setZero();
  CHECK_THROWS_AS(ml::nearest_prototypes(bad, 1), ml::invalid_argument);
}

TEST_CASE("HPM update from the subset loss's kept cosines equals update from X and W") {
  const Index C = 120, D = 12, B = 40;
  SplitMix64 rng(23);
  Mat<double> W(C, D), X(B, D);
  for (Index k = 0; k < W.size(); ++k) W.data()[k] = rng.normal();
  for (Index k = 0; k < X.size(); ++k) X.data()[k] = rng.normal();
  Eigen::VectorXi labels(B);
  for (Index i = 0; i < B; ++i) labels(i) = static_cast<int>(rng.next() % 30);  // 30 batch classes
  ml::HardPrototypeMinerOptions o;
  o.k = 6;
  o.h = -1;  // every mined class passes
  ml::HardPrototypeMiner<double> from_x(o), from_loss(o);
  from_x.build(W);
  from_loss.build(W);
  const ml::ActiveSet set = from_x.active_set(labels);
  Mat<double> dX(B, D), dW(C, D);
  ml::SubsetWorkspace<double> sws;
  ml::SubsetOptions so;
  so.keep_cosines = true;
  CHECK_THROWS_WITH_AS(from_loss.update(sws, W, set), doctest::Contains("keep_cosines"), ml::invalid_argument);
  const ml::CosFace<double> policy{8.0, 0.2};
  (void)ml::forward_backward(policy, X, W, set, {dX, dW}, sws, so);
  // The kept cosines against x.w / (|x| |w|) computed here.
  REQUIRE(sws.cosines().rows() == B);
  REQUIRE(sws.cosines().cols() == set.size());
  double worst = 0;
  for (Index i = 0; i < B; ++i)
    for (Index a = 0; a < set.size(); ++a) {
      const auto w = W.row(set.classes(a));
      const double c = X.row(i).dot(w) / (X.row(i).norm() * w.norm());
      worst = std::max(worst, std::fabs(sws.cosines()(i, a) - c));
    }
  CHECK(worst < 1e-14);
  std::vector<ml::IndexVector> before;
  for (Index j = 0; j < C; ++j) before.push_back(from_x.queue(j));
  from_x.update(X, W, set);
  from_loss.update(sws, W, set);
  Index changed = 0;
  for (Index j = 0; j < C; ++j) {
    CHECK(from_loss.queue(j) == from_x.queue(j));
    changed += !(from_x.queue(j) == before[static_cast<std::size_t>(j)]);
  }
  CHECK(changed > 0);  // the rule mined something, so equal queues say something
  // Class blocks keep no full cosine matrix: the call says so instead of keeping some.
  so.engine.class_block = 16;
  CHECK_THROWS_WITH_AS(ml::forward_backward(policy, X, W, set, {dX, dW}, sws, so), doctest::Contains("class blocks"),
                       ml::invalid_argument);
  CHECK(sws.cosines().size() == 0);
}

TEST_CASE("HPM: a huge k or queue_capacity is bounded by C - 1 -- no overflow of 2k, no C x capacity allocation") {
  Mat<double> W(4, 3);
  W << 1, 0, 0, 0.9, 0.1, 0, 0, 1, 0, 0.2, 0.3, 1;
  ml::HardPrototypeMinerOptions huge_k;
  huge_k.k = std::numeric_limits<Index>::max();  // 2k would overflow
  huge_k.h = -2;
  ml::HardPrototypeMiner<double> a(huge_k);
  CHECK(a.options().queue_capacity == std::numeric_limits<Index>::max());
  a.build(W);
  CHECK(a.k() == 3);
  for (Index j = 0; j < 4; ++j) CHECK(a.queue(j).size() == 3);
  ml::HardPrototypeMinerOptions huge_cap;
  huge_cap.k = 2;
  huge_cap.queue_capacity = Index(1) << 40;  // 4 x 2^40 entries would be 32 TiB
  huge_cap.h = -2;
  ml::HardPrototypeMiner<double> b(huge_cap);
  b.build(W);
  for (Index j = 0; j < 4; ++j) CHECK(b.queue(j).size() == 2);
  Eigen::VectorXi y(2);
  y << 0, 2;
  const ml::ActiveSet& set = b.active_set(y);
  CHECK(set.size() == 4);  // the labels, then their queues' members: every class
}

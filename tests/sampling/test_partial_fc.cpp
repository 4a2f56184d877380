// Partial FC: positives always kept, the quota, uniform negatives, reproducibility.
#include <doctest/doctest.h>

#include <marginloss/sampling/partial_fc.hpp>

#include "../support.hpp"

using namespace mltest;

TEST_CASE("Partial FC keeps every positive -- |A| = max(|positives|, round(r C)) -- sorted -- labels re-indexed") {
  ml::PartialFCSampler pfc(1000, 0.1, 3);
  CHECK(pfc.quota() == 100);
  SplitMix64 rng(1);
  for (int step = 0; step < 50; ++step) {
    Eigen::VectorXi labels(64);
    for (Index i = 0; i < 64; ++i) labels(i) = static_cast<int>(rng.next() % 1000);
    const ml::ActiveSet& a = pfc.sample(labels);
    CHECK(a.size() == 100);
    for (Index k = 1; k < a.size(); ++k) CHECK(a.classes(k - 1) < a.classes(k));
    for (Index i = 0; i < 64; ++i) CHECK(a.classes(a.local_labels(i)) == labels(i));
  }
  // More positives than the quota: the positives alone.
  ml::PartialFCSampler small(50, 0.1, 3);  // quota 5
  Eigen::VectorXi labels(8);
  labels << 9, 3, 3, 40, 12, 7, 30, 1;
  const ml::ActiveSet& a = small.sample(labels);
  CHECK(a.size() == 7);
  ml::IndexVector want(7);
  want << 1, 3, 7, 9, 12, 30, 40;
  CHECK(a.classes == want);
  CHECK(ml::PartialFCSampler(7, 0.1).quota() == 1);   // round(0.7)
  CHECK(ml::PartialFCSampler(25, 0.1).quota() == 3);  // round(2.5) = 3
  CHECK(ml::PartialFCSampler(10, 1.0).quota() == 10);
}

TEST_CASE("Partial FC negatives are uniform (chi-square over many draws at a fixed seed)") {
  const Index C = 40, draws = 20000;
  ml::PartialFCSampler pfc(C, 0.25, 77);  // quota 10
  Eigen::VectorXi labels(4);
  labels << 3, 7, 7, 20;  // 3 positives, 7 negatives from 37 classes
  std::vector<double> count(static_cast<std::size_t>(C), 0.0);
  for (Index t = 0; t < draws; ++t) {
    const ml::ActiveSet& a = pfc.sample(labels);
    REQUIRE(a.size() == 10);
    for (Index k = 0; k < a.size(); ++k) count[static_cast<std::size_t>(a.classes(k))] += 1;
  }
  CHECK(count[3] == draws);
  CHECK(count[7] == draws);
  CHECK(count[20] == draws);
  const double e = static_cast<double>(draws) * 7.0 / 37.0;
  double chi2 = 0;
  for (Index j = 0; j < C; ++j) {
    if (j == 3 || j == 7 || j == 20) continue;
    chi2 += (count[static_cast<std::size_t>(j)] - e) * (count[static_cast<std::size_t>(j)] - e) / e;
  }
  // df = 36 (sampling without replacement only lowers the variance).
  CHECK(chi2 < 36 + 6 * std::sqrt(2.0 * 36));
}

TEST_CASE("Partial FC is reproducible with a seed") {
  ml::PartialFCSampler a(500, 0.1, 5), b(500, 0.1, 5), c(500, 0.1, 6);
  Eigen::VectorXi labels(16);
  for (Index i = 0; i < 16; ++i) labels(i) = static_cast<int>(31 * i % 500);
  bool differ = false;
  for (int step = 0; step < 10; ++step) {
    const ml::IndexVector sa = a.sample(labels).classes;
    CHECK(sa == b.sample(labels).classes);
    differ = differ || sa != c.sample(labels).classes;
  }
  CHECK(differ);
  CHECK_THROWS_AS(ml::PartialFCSampler(10, 0.0), ml::invalid_argument);
  CHECK_THROWS_AS(ml::PartialFCSampler(10, 1.5), ml::invalid_argument);
  labels(0) = 500;
  CHECK_THROWS_WITH_AS(a.sample(labels), doctest::Contains("out of range"), ml::invalid_argument);
}

TEST_CASE("Partial FC + subset loss: the gradient lands on the sampled rows only") {
  const Case c = random_case(8, 6, 60, 3);
  ml::PartialFCSampler pfc(60, 0.2, 1);
  const ml::ActiveSet& a = pfc.sample(c.labels);
  ml::SubsetWorkspace<double> sws;
  ml::SubsetOptions o;
  o.zero_inactive_rows = true;
  Mat<double> dX(8, 6), dW(60, 6);
  ml::forward_backward(ml::CosFace<double>{}, c.X, c.W, a, {dX, dW}, sws, o);
  for (Index j = 0; j < 60; ++j) {
    const bool sampled = (a.classes.array() == j).any();
    CHECK((dW.row(j).squaredNorm() > 0) == sampled);
  }
}

// Adaptive Data Sampling: weight updates, floor and cap, draws by the weights, reproducibility.
#include <doctest/doctest.h>

#include <marginloss/sampling/adaptive_sampler.hpp>

#include "../support.hpp"

using namespace mltest;

TEST_CASE("xoshiro256** seeded by splitmix64: reference outputs") {
  // From an independent implementation of the published algorithms.
  ml::Xoshiro256 g0(0), g42(42);
  CHECK(g0.next() == 0x99ec5f36cb75f2b4ULL);
  CHECK(g0.next() == 0xbf6e1f784956452aULL);
  CHECK(g0.next() == 0x1a5f849d4933e6e0ULL);
  CHECK(g42.next() == 0x15780b2e0c2ec716ULL);
  CHECK(g42.next() == 0x6104d9866d113a7eULL);
  CHECK(g42.next() == 0xae17533239e499a1ULL);
  ml::Xoshiro256 g(7);
  for (int i = 0; i < 1000; ++i) {
    CHECK(g.below(3) < 3);
    const double u = g.uniform();
    CHECK((u >= 0.0 && u < 1.0));
  }
}

TEST_CASE("ADS weights move in the documented direction, within floor and cap") {
  ml::AdaptiveSampler ads(10, 1);
  for (Index n = 0; n < 10; ++n) CHECK(ads.probability(n) == doctest::Approx(0.1));
  ml::IndexVector idx(4);
  idx << 0, 1, 2, 2;
  Eigen::Matrix<bool, Eigen::Dynamic, 1> ok(4);
  ok << true, false, true, true;
  ads.update(idx, ok);
  CHECK(ads.weight(0) == doctest::Approx(0.8));
  CHECK(ads.weight(1) == doctest::Approx(1.5));
  CHECK(ads.weight(2) == doctest::Approx(0.64));  // reported twice
  CHECK(ads.weight(3) == 1.0);
  CHECK(ads.probability(1) > ads.probability(3));
  CHECK(ads.probability(0) < ads.probability(3));
  for (int step = 0; step < 100; ++step) ads.update(idx, ok);
  CHECK(ads.weight(0) == ads.options().floor);
  CHECK(ads.weight(1) == ads.options().cap);
  double total = 0;
  for (Index n = 0; n < 10; ++n) total += ads.probability(n);
  CHECK(total == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(ads.total_weight() == doctest::Approx(0.1 + 10 + 0.1 + 7.0));
}

TEST_CASE("ADS noise rule: a target cosine below the threshold lowers the weight strongly") {
  ml::AdaptiveSamplerOptions o;
  o.noise_threshold = 0.2;
  o.floor = 0.01;
  ml::AdaptiveSampler ads(5, 0, o);
  ml::IndexVector idx(3);
  idx << 0, 1, 2;
  Eigen::VectorXi ok(3);
  ok << 0, 0, 1;
  Eigen::VectorXd t(3);
  t << 0.1, 0.5, 0.5;
  ads.update(idx, ok, t);
  CHECK(ads.weight(0) == doctest::Approx(0.05));  // wrong, but suspected noise
  CHECK(ads.weight(1) == doctest::Approx(1.5));
  CHECK(ads.weight(2) == doctest::Approx(0.8));
  ads.update(idx, ok, t);
  CHECK(ads.weight(0) == doctest::Approx(0.01));  // the floor
  // Off by default: threshold -1.
  ml::AdaptiveSampler plain(5, 0);
  plain.update(idx, ok, t);
  CHECK(plain.weight(0) == doctest::Approx(1.5));
}

TEST_CASE("ADS draws follow the weights (chi-square at a fixed seed)") {
  const Index N = 50, draws = 200000;
  ml::AdaptiveSampler ads(N, 12345);
  SplitMix64 rng(4);
  for (Index n = 0; n < N; ++n) ads.set_weight(n, 0.1 + 9.9 * rng.uniform() * rng.uniform());
  std::vector<double> count(static_cast<std::size_t>(N), 0.0);
  const ml::IndexVector d = ads.draw(draws);
  for (Index i = 0; i < draws; ++i) count[static_cast<std::size_t>(d(i))] += 1;
  double chi2 = 0;
  for (Index n = 0; n < N; ++n) {
    const double e = static_cast<double>(draws) * ads.probability(n);
    chi2 += (count[static_cast<std::size_t>(n)] - e) * (count[static_cast<std::size_t>(n)] - e) / e;
  }
  // df = 49: mean 49, sd ~ 9.9; 49 + 6 sd.
  CHECK(chi2 < 49 + 6 * std::sqrt(2.0 * 49));
  // A sample at the floor is still drawn.
  ads.set_weight(7, 0.0);
  CHECK(ads.weight(7) == ads.options().floor);
}

TEST_CASE("ADS: the same seed gives the same draws -- a padded tree never yields an index >= N") {
  ml::AdaptiveSampler a(37, 99), b(37, 99), c(37, 100);
  ml::IndexVector idx(3);
  idx << 1, 5, 36;
  Eigen::VectorXi ok(3);
  ok << 0, 1, 0;
  a.update(idx, ok);
  b.update(idx, ok);
  c.update(idx, ok);
  const ml::IndexVector da = a.draw(500), db = b.draw(500), dc = c.draw(500);
  CHECK(da == db);
  CHECK(da != dc);
  CHECK(da.maxCoeff() < 37);
  CHECK(da.minCoeff() >= 0);
  // Golden values: the stream is fixed by the algorithms, not the platform.
  ml::AdaptiveSampler g(1000, 42);
  const ml::IndexVector first = g.draw(5);
  ml::Xoshiro256 x(42);
  for (Index i = 0; i < 5; ++i) CHECK(first(i) == static_cast<Index>(x.uniform() * 1000.0));
}

TEST_CASE("ADS errors") {
  CHECK_THROWS_AS(ml::AdaptiveSampler(0), ml::invalid_argument);
  ml::AdaptiveSamplerOptions o;
  o.floor = 0;
  CHECK_THROWS_WITH_AS(ml::AdaptiveSampler(3, 0, o), doctest::Contains("floor = 0"), ml::invalid_argument);
  o = {};
  o.cap = 0.05;
  CHECK_THROWS_AS(ml::AdaptiveSampler(3, 0, o), ml::invalid_argument);
  ml::AdaptiveSampler ads(3);
  ml::IndexVector idx(1);
  idx << 3;
  Eigen::VectorXi ok(1);
  ok << 1;
  CHECK_THROWS_WITH_AS(ads.update(idx, ok), doctest::Contains("out of range"), ml::invalid_argument);
}

// What a Workspace exposes between a forward and its backward.
#include <doctest/doctest.h>

#include "support.hpp"

using namespace mltest;

TEST_CASE("Workspace::cosines: the forward's clamped cosines, between forward and backward, dense path only") {
  // C = 700 spans several class tiles, the last one partial.
  const Case c = random_case(9, 10, 700, 611);
  const ml::ArcFace<double> policy{16.0, 0.3};
  ml::Workspace<double> ws;
  Mat<double> cos(9, 700), dX(9, 10), dW(700, 10);
  CHECK_THROWS_WITH_AS(ws.cosines(cos), doctest::Contains("no forward"), ml::invalid_argument);
  const auto fwd = ml::forward(policy, c.X, c.W, c.labels, ws);
  Mat<double> wrong(9, 699);
  CHECK_THROWS_WITH_AS(ws.cosines(wrong), doctest::Contains("out"), ml::invalid_argument);
  ws.cosines(cos);
  double worst = 0;
  for (Index i = 0; i < 9; ++i)
    for (Index j = 0; j < 700; ++j) {
      const double want = c.X.row(i).dot(c.W.row(j)) / (c.X.row(i).norm() * c.W.row(j).norm());
      worst = std::max(worst, std::fabs(cos(i, j) - want));
    }
  CHECK(worst < 1e-14);
  ml::backward(fwd, 1.0, {dX, dW});
  CHECK_THROWS_WITH_AS(ws.cosines(cos), doctest::Contains("no forward"), ml::invalid_argument);
  ml::Options blocks;
  blocks.class_block = 256;
  (void)ml::forward(policy, c.X, c.W, c.labels, ws, blocks);
  CHECK_THROWS_WITH_AS(ws.cosines(cos), doctest::Contains("class blocks"), ml::invalid_argument);
}

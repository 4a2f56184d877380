// Every bad input throws marginloss::invalid_argument with a message naming it.
#include <doctest/doctest.h>

#include <limits>
#include <marginloss/sampling/subset.hpp>
#include <string>

#include "support.hpp"

using namespace mltest;

namespace {

// Runs fn, requires marginloss::invalid_argument, and checks the message contains each part.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    FAIL("no exception thrown");
  } catch (const ml::invalid_argument& e) {
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(what.rfind("marginloss: ", 0) == 0);
    for (const char* p : parts) CHECK(what.find(p) != std::string::npos);
  }
}

const ml::CosFace<double> cosface{30, 0.35};

}  // namespace

TEST_CASE("The exception type derives from std::invalid_argument") {
  Case c = random_case(2, 3, 4, 1);
  c.labels(0) = 9;
  CHECK_THROWS_AS(ml::forward_backward(cosface, c.X, c.W, c.labels), std::invalid_argument);
}

TEST_CASE("Shapes") {
  Case c = random_case(3, 4, 5, 2);
  expect_error([&] { ml::forward_backward(cosface, Mat<double>(0, 4), c.W, Eigen::VectorXi(0)); }, {"X has 0 rows", "empty"});
  expect_error([&] { ml::forward_backward(cosface, Mat<double>(3, 0), Mat<double>(5, 0), c.labels); }, {"X has 0 columns"});
  expect_error([&] { ml::forward_backward(cosface, c.X, Mat<double>(0, 4), c.labels); }, {"W has 0 rows"});
  expect_error([&] { ml::forward_backward(cosface, c.X, Mat<double>(Mat<double>::Ones(5, 3)), c.labels); }, {"W has 3 columns", "X has 4"});
  expect_error([&] { ml::forward_backward(cosface, c.X, c.W, Eigen::VectorXi::Zero(2)); }, {"labels has 2 entries", "X has 3 rows"});
  ml::Workspace<double> ws;
  Mat<double> dX(3, 4), dW(5, 4), bad(2, 4);
  expect_error([&] { ml::forward_backward(cosface, c.X, c.W, c.labels, {bad, dW}, ws); }, {"dX is 2x4", "3x4"});
  expect_error([&] { ml::forward_backward(cosface, c.X, c.W, c.labels, {dX, bad}, ws); }, {"dW is 2x4", "5x4"});
  // The same shapes checked by a backward of a split forward.
  const auto fwd = ml::forward(cosface, c.X, c.W, c.labels, ws);
  expect_error([&] { ml::backward(fwd, 1.0, {bad, dW}); }, {"dX is 2x4", "3x4"});
}

TEST_CASE("Labels out of range, int32 and int64") {
  Case c = random_case(3, 4, 5, 3);
  c.labels(1) = 5;
  expect_error([&] { ml::forward_backward(cosface, c.X, c.W, c.labels); }, {"labels[1] = 5", "[0, 5)"});
  c.labels(1) = -1;
  expect_error([&] { ml::forward_backward(cosface, c.X, c.W, c.labels); }, {"labels[1] = -1"});
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> y64(3);
  y64 << 0, 4, 7000000000LL;
  expect_error([&] { ml::forward_backward(cosface, c.X, c.W, y64); }, {"labels[2] = 7000000000"});
  y64(2) = 2;
  CHECK_NOTHROW(ml::forward_backward(cosface, c.X, c.W, y64));
}

TEST_CASE("Non-finite and zero-norm rows") {
  Case c = random_case(3, 4, 5, 4);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  Mat<double> X = c.X;
  X(1, 2) = nan;
  expect_error([&] { ml::forward_backward(cosface, X, c.W, c.labels); }, {"X row 1", "non-finite", "X(1, 2) = nan"});
  Mat<double> W = c.W;
  W(4, 0) = -inf;
  expect_error([&] { ml::forward_backward(cosface, c.X, W, c.labels); }, {"W row 4", "W(4, 0) = -inf"});
  X = c.X;
  X.row(2).setZero();
  expect_error([&] { ml::forward_backward(cosface, X, c.W, c.labels); }, {"X row 2 has zero norm"});
  W = c.W;
  W.row(0).setZero();
  expect_error([&] { ml::forward_backward(cosface, c.X, W, c.labels); }, {"W row 0 has zero norm"});
  Mat<float> Xf = c.X.cast<float>(), Wf = c.W.cast<float>();
  Xf.row(0) *= 1e-34f;  // norm ~1e-34 < 2^-100
  expect_error([&] { ml::forward_backward(ml::CosFace<float>{}, Xf, Wf, c.labels); }, {"X row 0 has norm", "outside the supported range"});
}

TEST_CASE("Invalid hyper-parameters") {
  Case c = random_case(2, 3, 4, 5);
  auto run = [&](const auto& p) { ml::forward_backward(p, c.X, c.W, c.labels); };
  expect_error([&] { run(ml::CosFace<double>{30, -0.1}); }, {"CosFace", "m = -0.1", ">= 0"});
  expect_error([&] { run(ml::CosFace<double>{0, 0.35}); }, {"CosFace", "s = 0", "> 0"});
  expect_error([&] { run(ml::NormFace<double>{-1}); }, {"NormFace", "s = -1"});
  expect_error([&] { run(ml::ArcFace<double>{64, -0.5}); }, {"ArcFace", "m = -0.5"});
  expect_error([&] { run(ml::ArcFace<double>{64, 4.0}); }, {"ArcFace", "m = 4", "< pi"});
  expect_error([&] { run(ml::ArcFace<double>{std::numeric_limits<double>::quiet_NaN(), 0.5}); }, {"ArcFace", "s = nan", "finite"});
  expect_error([&] { run(ml::CombinedMargin<double>{64, 0, 0.3, 0.2}); }, {"CombinedMargin", "m1 = 0"});
  expect_error([&] { run(ml::CombinedMargin<double>{64, 1, -0.3, 0.2}); }, {"CombinedMargin", "m2 = -0.3"});
  expect_error([&] { run(ml::CombinedMargin<double>{64, 1, 0.3, -0.2}); }, {"CombinedMargin", "m3 = -0.2"});
  expect_error([&] { run(ml::SphereFace<double>{0, 5}); }, {"SphereFace", "m = 0", "1..5"});
  expect_error([&] { run(ml::SphereFace<double>{6, 5}); }, {"SphereFace", "m = 6"});
  expect_error([&] { run(ml::SphereFace<double>{4, -1}); }, {"SphereFace", "lambda = -1"});
  expect_error([&] { run(ml::SphereFace<double>{4, 5, ml::Scale::fixed, 0}); }, {"SphereFace", "s = 0"});
}

TEST_CASE("Cosine-level and backward errors") {
  Mat<double> cos(2, 3);
  cos << 0.1, 0.2, 0.3, 0.4, 1.5, 0.6;
  Eigen::VectorXi y(2);
  y << 0, 2;
  expect_error([&] { ml::cosine_forward_backward(cosface, cos, y); }, {"cos(1, 1) = 1.5", "not a cosine"});
  cos(1, 1) = std::numeric_limits<double>::quiet_NaN();
  expect_error([&] { ml::cosine_forward_backward(cosface, cos, y); }, {"cos(1, 1) = nan"});
  cos(1, 1) = 0.5;
  expect_error([&] { ml::cosine_forward_backward(ml::SphereFace<double>{}, cos, y); }, {"SphereFace", "scales"});
  y(0) = 3;
  expect_error([&] { ml::cosine_forward_backward(cosface, cos, y); }, {"labels[0] = 3"});
  expect_error([&] { ml::cosine_forward_backward(cosface, Mat<double>(0, 3), Eigen::VectorXi(0)); }, {"empty"});
  y(0) = 0;
  Eigen::VectorXd scales(2), dscales(2);
  scales << 1.0, -2.0;
  Mat<double> dcos(2, 3);
  expect_error([&] { ml::cosine_forward_backward(ml::SphereFace<double>{}, cos, y, scales, dcos, dscales); }, {"scales[1] = -2"});

  Case c = random_case(2, 3, 4, 6);
  ml::Workspace<double> ws;
  Mat<double> dX(2, 3), dW(4, 3);
  const auto fwd = ml::forward(cosface, c.X, c.W, c.labels, ws);
  expect_error([&] { ml::backward(fwd, std::numeric_limits<double>::infinity(), {dX, dW}); }, {"grad_loss = inf"});
  // That backward consumed the forward (also when it throws): a second one has no forward.
  expect_error([&] { ml::backward(fwd, 1.0, {dX, dW}); }, {"backward() needs a forward() on the same workspace first"});
}

TEST_CASE("A Forward context is consumed by one backward, before its workspace's next forward") {
  Case c = random_case(3, 4, 5, 7);
  ml::Workspace<double> ws;
  Mat<double> dX(3, 4), dW(5, 4);
  const auto first = ml::forward(cosface, c.X, c.W, c.labels, ws);
  const auto second = ml::forward(cosface, c.X, c.W, c.labels, ws);
  // The workspace now holds the second forward's buffers: the first context is stale.
  const char* stale = "backward() got a forward whose workspace has since run another forward()";
  expect_error([&] { ml::backward(first, 1.0, {dX, dW}); }, {stale});
  // The stale backward consumed nothing: the second forward's backward runs and matches.
  CHECK_NOTHROW(ml::backward(second, 1.0, {dX, dW}));
  const auto ref = ml::forward_backward(cosface, c.X, c.W, c.labels);
  CHECK(dX == ref.dX);
  CHECK(dW == ref.dW);
  // A second backward of the same forward.
  const char* consumed = "backward() needs a forward() on the same workspace first";
  expect_error([&] { ml::backward(second, 1.0, {dX, dW}); }, {consumed});
  // And the stale one after that: the workspace holds no forward at all now.
  expect_error([&] { ml::backward(first, 1.0, {dX, dW}); }, {"backward() needs a forward()"});
}

TEST_CASE("Learnable margins: dmargins required for AdaptiveMargin, rejected for other policies, every entry point") {
  // Formerly a compile-time error (tests/compile_fail/learnable_margins_without_dmargins.cpp);
  // the Gradients argument makes it a runtime one.
  Case c = random_case(4, 5, 6, 8);
  const Eigen::VectorXd margins = Eigen::VectorXd::Constant(6, 0.3);
  const ml::AdaptiveMargin<double> adaptive{30, margins};
  const auto fixed = ml::class_margins(ml::CosFace<double>{30, 0.0}, margins);
  Mat<double> dX(4, 5), dW(6, 5);
  Eigen::VectorXd dm(6);
  const char* need = "AdaptiveMargin has learnable margins: pass Gradients{dX, dW, dmargins}";
  const char* cos_none = "CosFace has no learnable margins: dmargins must be empty";
  const char* arc_none = "ArcFace has no learnable margins: dmargins must be empty";
  SUBCASE("forward_backward") {
    ml::Workspace<double> ws;
    expect_error([&] { ml::forward_backward(adaptive, c.X, c.W, c.labels, {dX, dW}, ws); }, {need});
    expect_error([&] { ml::forward_backward(cosface, c.X, c.W, c.labels, {dX, dW, dm}, ws); }, {cos_none});
    expect_error([&] { ml::forward_backward(fixed, c.X, c.W, c.labels, {dX, dW, dm}, ws); }, {cos_none});
    const ml::ArcFace<double> arcface{};
    expect_error([&] { ml::forward_backward(arcface, c.X, c.W, c.labels, {dX, dW, dm}, ws); }, {arc_none});
    // Checked before the forward runs: the workspace holds nothing.
    CHECK_FALSE(ws.holds_forward());
    CHECK_NOTHROW(ml::forward_backward(adaptive, c.X, c.W, c.labels, {dX, dW, dm}, ws));
    CHECK_NOTHROW(ml::forward_backward(cosface, c.X, c.W, c.labels, {dX, dW}, ws));
  }
  SUBCASE("backward") {
    ml::Workspace<double> ws;
    const auto fa = ml::forward(adaptive, c.X, c.W, c.labels, ws);
    expect_error([&] { ml::backward(fa, 1.0, {dX, dW}); }, {need});
    // Checked before the forward is consumed: the right call still runs.
    CHECK_NOTHROW(ml::backward(fa, 1.0, {dX, dW, dm}));
    const auto fc = ml::forward(cosface, c.X, c.W, c.labels, ws);
    expect_error([&] { ml::backward(fc, 1.0, {dX, dW, dm}); }, {cos_none});
    CHECK_NOTHROW(ml::backward(fc, 1.0, {dX, dW}));
    const auto ff = ml::forward(fixed, c.X, c.W, c.labels, ws);
    expect_error([&] { ml::backward(ff, 1.0, {dX, dW, dm}); }, {cos_none});
  }
  SUBCASE("subset forward_backward") {
    ml::SubsetWorkspace<double> sws;
    ml::ActiveSet set;
    set.classes.resize(4);
    set.classes << 5, 0, 2, 3;
    set.local_labels.resize(4);
    set.local_labels << 1, 2, 3, 0;  // the batch's classes 0, 2, 3, 5
    expect_error([&] { ml::forward_backward(adaptive, c.X, c.W, set, {dX, dW}, sws); }, {need});
    expect_error([&] { ml::forward_backward(cosface, c.X, c.W, set, {dX, dW, dm}, sws); }, {cos_none});
    expect_error([&] { ml::forward_backward(fixed, c.X, c.W, set, {dX, dW, dm}, sws); }, {cos_none});
    CHECK_NOTHROW(ml::forward_backward(adaptive, c.X, c.W, set, {dX, dW, dm}, sws));
    CHECK_NOTHROW(ml::forward_backward(cosface, c.X, c.W, set, {dX, dW}, sws));
  }
}

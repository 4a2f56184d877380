// Regression tests of the library's promises under adversarial use: every index input is
// range-checked, a backward checks it is its forward's call, per-class margins obey their
// policy's rules, outputs may not overlap what the backward reads, the cross-entropy is never
// negative, the prototype miner is scale-invariant and atomic, and a workspace detects
// concurrent use. Each case failed (crash, wrong value or silent acceptance) before the fix.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#include <marginloss/distributed/class_range.hpp>
#include <marginloss/sampling/adaptive_sampler.hpp>
#include <marginloss/sampling/hard_prototype_miner.hpp>
#include <marginloss/sampling/subset.hpp>

#include "../support.hpp"

using namespace mltest;

namespace {

// Labels in [0, C) for a batch of B.
Eigen::VectorXi labels_mod(Index B, Index C) {
  Eigen::VectorXi y(B);
  for (Index i = 0; i < B; ++i) y(i) = static_cast<int>(i % C);
  return y;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1. Index inputs: one range check in the index's own signedness.

// The subset's ids are an ml::IndexVector (ActiveSet::classes): uint64 ids converted with
// .cast<ml::Index>() wrap to negative values, which must be rejected, not used as an index.
TEST_CASE("subset: uint64 active ids >= 2^63, cast to Index, are rejected, not used as an index") {
  const Case c = random_case(2, 4, 6, 501);
  Eigen::Matrix<std::uint64_t, Eigen::Dynamic, 1> act(2);
  act << 0, (std::uint64_t(1) << 63) + 5;  // -2^63 + 5 as a signed 64-bit index
  Eigen::VectorXi local(2);
  local << 0, 1;
  Mat<double> dX(2, 4), dW(6, 4);
  ml::SubsetWorkspace<double> sws;
  ml::ActiveSet set{act.cast<ml::Index>(), local.cast<ml::Index>()};
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(ml::CosFace<double>{}, c.X, c.W, set, {dX, dW}, sws),
                       doctest::Contains("active[1] = -9223372036854775803 is out of range [0, 6)"),
                       ml::invalid_argument);
  act(1) = 5;
  set.classes = act.cast<ml::Index>();
  CHECK_NOTHROW((void)ml::forward_backward(ml::CosFace<double>{}, c.X, c.W, set, {dX, dW}, sws));
}

TEST_CASE("AdaptiveSampler: unsigned indices >= 2^63 are rejected and leave the weights unchanged") {
  ml::AdaptiveSampler s(10, 7);
  Eigen::Matrix<std::uint64_t, Eigen::Dynamic, 1> idx(2);
  idx << 3, ~std::uint64_t(0);
  Eigen::VectorXi correct(2);
  correct << 0, 0;
  CHECK_THROWS_WITH_AS(s.update(idx, correct), doctest::Contains("indices[1] = 18446744073709551615"),
                       ml::invalid_argument);
  CHECK(s.weight(3) == doctest::Approx(1.0));  // index 3, checked first, was not updated either
}

// ---------------------------------------------------------------------------------------------
// 2, 3. A backward checks it is its forward's call. The Forward context carries the policy
// and W, so a backward can no longer get another policy type, other parameters or another W;
// what remains to check is that the context is still its workspace's live forward, that the
// dmargins output matches the policy, and that per-class margins (a view of the caller's
// memory) were not changed in place in between.

TEST_CASE("backward of a forward whose workspace has since run another forward throws before reading stale buffers") {
  // The workspace first serves AdaptiveMargin with C = 1000 and labels 996..999, then CosFace
  // with C = 6; the AdaptiveMargin forward's backward would read the stale batch class ids.
  ml::Workspace<double> ws;
  const Case big = random_case(4, 5, 1000, 502);
  Eigen::VectorXi ybig(4);
  ybig << 996, 997, 998, 999;
  const ml::Vector<double> margins = ml::Vector<double>::Constant(1000, 0.3);
  const ml::AdaptiveMargin<double> am{30, margins};
  const auto fwd_am = ml::forward(am, big.X, big.W, ybig, ws);
  const Case c = random_case(4, 5, 6, 503);
  const Eigen::VectorXi y = labels_mod(4, 6);
  const auto fwd_cos = ml::forward(ml::CosFace<double>{}, c.X, c.W, y, ws);
  Mat<double> dXb(4, 5), dWb(1000, 5);
  ml::Vector<double> dmb(1000);
  CHECK_THROWS_WITH_AS(ml::backward(fwd_am, 1.0, {dXb, dWb, dmb}),
                       doctest::Contains("whose workspace has since run another forward()"), ml::invalid_argument);
  // The live forward is intact and still gives the allocating form's gradients.
  Mat<double> dX(4, 5), dW(6, 5);
  CHECK_NOTHROW(ml::backward(fwd_cos, 1.0, {dX, dW}));
  const auto ref = ml::forward_backward(ml::CosFace<double>{}, c.X, c.W, y);
  CHECK(fwd_cos.loss() == ref.loss);
  CHECK((dX - ref.dX).cwiseAbs().maxCoeff() == 0.0);
  CHECK((dW - ref.dW).cwiseAbs().maxCoeff() == 0.0);
  // Both forwards are now consumed.
  CHECK_THROWS_WITH_AS(ml::backward(fwd_cos, 1.0, {dX, dW}), doctest::Contains("needs a forward()"),
                       ml::invalid_argument);
  CHECK_THROWS_AS(ml::backward(fwd_am, 1.0, {dXb, dWb, dmb}), ml::invalid_argument);
}

TEST_CASE("backward with a dmargins shorter than the forward's classes throws") {
  const Case c = random_case(4, 5, 6, 504);
  const Eigen::VectorXi y = labels_mod(4, 6);
  ml::Workspace<double> ws;
  const ml::Vector<double> margins = ml::Vector<double>::Constant(6, 0.3);
  const ml::AdaptiveMargin<double> am{30, margins};
  const auto fwd = ml::forward(am, c.X, c.W, y, ws);
  Mat<double> dX(4, 5), dW(6, 5);
  ml::Vector<double> dm(3);
  CHECK_THROWS_WITH_AS(ml::backward(fwd, 1.0, {dX, dW, dm}),
                       doctest::Contains("dmargins has 3 entries but there are 6 classes"), ml::invalid_argument);
}

TEST_CASE("learnable margins need dmargins, other policies take none: every entry point checks at run time") {
  const Case c = random_case(4, 5, 6, 514);
  const Eigen::VectorXi y = labels_mod(4, 6);
  const ml::Vector<double> margins = ml::Vector<double>::Constant(6, 0.3);
  const ml::AdaptiveMargin<double> am{30, margins};
  const ml::CosFace<double> cosface{};
  Mat<double> dX(4, 5), dW(6, 5);
  ml::Vector<double> dm(6);
  ml::Workspace<double> ws;
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(am, c.X, c.W, y, {dX, dW}, ws),
                       doctest::Contains("AdaptiveMargin has learnable margins: pass Gradients{dX, dW, dmargins}"),
                       ml::invalid_argument);
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(cosface, c.X, c.W, y, {dX, dW, dm}, ws),
                       doctest::Contains("has no learnable margins: dmargins must be empty"), ml::invalid_argument);
  // (Whether the rejected backward consumed its forward is left open: a fresh forward follows.)
  CHECK_THROWS_WITH_AS(ml::backward(ml::forward(am, c.X, c.W, y, ws), 1.0, {dX, dW}),
                       doctest::Contains("has learnable margins"), ml::invalid_argument);
  CHECK_NOTHROW(ml::backward(ml::forward(am, c.X, c.W, y, ws), 1.0, {dX, dW, dm}));
  CHECK_THROWS_WITH_AS(ml::backward(ml::forward(cosface, c.X, c.W, y, ws), 1.0, {dX, dW, dm}),
                       doctest::Contains("has no learnable margins"), ml::invalid_argument);
  CHECK_NOTHROW(ml::backward(ml::forward(cosface, c.X, c.W, y, ws), 1.0, {dX, dW}));
  ml::SubsetWorkspace<double> sws;
  const ml::ActiveSet set{(ml::IndexVector(3) << 0, 2, 4).finished(), (ml::IndexVector(4) << 0, 1, 2, 0).finished()};
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(am, c.X, c.W, set, {dX, dW}, sws),
                       doctest::Contains("has learnable margins"), ml::invalid_argument);
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(cosface, c.X, c.W, set, {dX, dW, dm}, sws),
                       doctest::Contains("has no learnable margins"), ml::invalid_argument);
  CHECK_NOTHROW((void)ml::forward_backward(am, c.X, c.W, set, {dX, dW, dm}, sws));
  CHECK_NOTHROW((void)ml::forward_backward(cosface, c.X, c.W, set, {dX, dW}, sws));
}

TEST_CASE("backward detects per-class margins changed in place after its forward") {
  const Case c = random_case(5, 6, 7, 505);
  const Eigen::VectorXi y = labels_mod(5, 7);
  Mat<double> dX(5, 6), dW(7, 6);
  ml::Vector<double> margins = ml::Vector<double>::Constant(7, 0.3);
  ml::Workspace<double> ws;
  const auto cm = ml::class_margins(ml::ArcFace<double>{64, 0.5}, margins);
  {
    const auto fwd = ml::forward(cm, c.X, c.W, y, ws);
    margins(6) = 0.4;  // an optimiser step before the backward
    CHECK_THROWS_WITH_AS(ml::backward(fwd, 1.0, {dX, dW}), doctest::Contains("other parameters or per-class margins"),
                         ml::invalid_argument);
  }
  // The same call passes.
  const auto fwd = ml::forward(cm, c.X, c.W, y, ws);
  CHECK_NOTHROW(ml::backward(fwd, 1.0, {dX, dW}));
}

// ---------------------------------------------------------------------------------------------
// 5. Per-class margins obey the wrapped policy's rule.

TEST_CASE("class_margins: every class's margin is validated by the wrapped policy") {
  const Case c = random_case(3, 4, 5, 506);
  const Eigen::VectorXi y = labels_mod(3, 5);
  ml::Vector<double> m = ml::Vector<double>::Constant(5, 0.3);
  m(2) = 4.0;  // ArcFace needs m < pi
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(ml::class_margins(ml::ArcFace<double>{64, 0.5}, m), c.X, c.W, y),
                       doctest::Contains("margins(2) = 4"), ml::invalid_argument);
  m(2) = 1e6;
  CHECK_THROWS_AS((void)ml::forward_backward(ml::class_margins(ml::CurricularFace<double>{}, m), c.X, c.W, y),
                  ml::invalid_argument);
  m(2) = 0.6;
  CHECK_NOTHROW((void)ml::forward_backward(ml::class_margins(ml::ArcFace<double>{64, 0.5}, m), c.X, c.W, y));
}

// ---------------------------------------------------------------------------------------------
// 6. Aliasing: outputs may not overlap what the backward reads; dX may alias X.

TEST_CASE("dW aliasing W, dX aliasing W and dX overlapping dW throw -- dX aliasing X is exact") {
  const Case c = random_case(4, 5, 6, 507);
  const Eigen::VectorXi y = labels_mod(4, 6);
  const ml::CosFace<double> p{};
  for (const ml::Index block : {ml::Index(0), ml::Index(2)}) {
    ml::Options o;
    o.class_block = block;
    ml::Workspace<double> ws;
    Mat<double> W = c.W, dX(4, 5);
    CHECK_THROWS_WITH_AS((void)ml::forward_backward(p, c.X, W, y, {dX, W}, ws, o), doctest::Contains("dW overlaps W"),
                         ml::invalid_argument);
    Mat<double> big = Mat<double>::Zero(10, 5);
    big.topRows(6) = c.W;
    Mat<double> dW(6, 5);
    CHECK_THROWS_AS((void)ml::forward_backward(p, c.X, big.topRows(6), y, {big.middleRows(4, 4), dW}, ws, o),
                    ml::invalid_argument);
    Mat<double> both(10, 5);
    CHECK_THROWS_WITH_AS((void)ml::forward_backward(p, c.X, c.W, y, {both.topRows(4), both.middleRows(2, 6)}, ws, o),
                         doctest::Contains("dX and dW overlap"), ml::invalid_argument);
    // dX in place of X: the backward reads only the normalised copy the forward made.
    const auto ref = ml::forward_backward(p, c.X, c.W, y, o);
    Mat<double> X = c.X, dW2(6, 5);
    const double loss = ml::forward_backward(p, X, c.W, y, {X, dW2}, ws, o);
    CHECK(loss == ref.loss);
    CHECK((X - ref.dX).cwiseAbs().maxCoeff() == 0.0);
    CHECK((dW2 - ref.dW).cwiseAbs().maxCoeff() == 0.0);
  }
}

// ---------------------------------------------------------------------------------------------
// 7. The cross-entropy is >= 0 whatever the compiler contracts (this file is also built with
// -ffp-contract=fast and FMA: the target marginloss_reliability_fma_tests).

TEST_CASE("the loss is never negative when one logit dominates at extreme scales") {
  for (const double scale : {1.0, 1e10, 1e20}) {
    Mat<float> X(2, 3), W(1, 3);
    X << 1, 2, 3, -2, 1, 0.5;
    X *= static_cast<float>(scale);
    W << 0.3f, -0.2f, 0.9f;
    const Eigen::VectorXi y = Eigen::VectorXi::Zero(2);
    const auto r = ml::forward_backward(ml::SphereFace<float>{}, X, W, y);  // C = 1: the exact loss is 0
    CHECK(r.loss >= 0.0f);
    CHECK(r.loss == doctest::Approx(0.0f));
  }
  for (const double scale : {1.0, 1e100, 1e200}) {
    Mat<double> X(2, 3), W(1, 3);
    X << 1, 2, 3, -2, 1, 0.5;
    X *= scale;
    W << 0.3, -0.2, 0.9;
    const Eigen::VectorXi y = Eigen::VectorXi::Zero(2);
    const auto r = ml::forward_backward(ml::SphereFace<double>{}, X, W, y);
    CHECK(r.loss >= 0.0);
    CHECK(r.loss == doctest::Approx(0.0));
  }
}

// ---------------------------------------------------------------------------------------------
// 8. The prototype miner sees cosines, like the loss.

TEST_CASE("HardPrototypeMiner: neighbours and similarities are invariant under row scaling") {
  const Case c = random_case(1, 16, 150, 508);
  ml::HardPrototypeMinerOptions o;
  o.k = 5;
  ml::HardPrototypeMiner<float> ref(o);
  const Mat<float> W = c.W.cast<float>();
  ref.build(W);
  for (const float s : {1e-25f, 1e20f, 1e25f}) {
    ml::HardPrototypeMiner<float> hpm(o);
    const Mat<float> Ws = W * s;
    hpm.build(Ws);
    CHECK(hpm.neighbours() == ref.neighbours());
    CHECK((hpm.neighbour_similarities() - ref.neighbour_similarities()).cwiseAbs().maxCoeff() < 1e-5f);
    for (ml::Index j = 0; j < 150; j += 37) CHECK(hpm.queue(j) == ref.queue(j));
  }
}

TEST_CASE("HardPrototypeMiner: a failed build leaves the miner as it was") {
  ml::HardPrototypeMinerOptions o;
  o.k = 2;
  ml::HardPrototypeMiner<double> hpm(o);
  Mat<double> W = random_case(1, 4, 5, 509).W;
  W(3, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(hpm.build(W), ml::invalid_argument);
  CHECK(hpm.num_classes() == 0);
  const Eigen::VectorXi y = labels_mod(3, 5);
  CHECK_THROWS_WITH_AS((void)hpm.active_set(y), doctest::Contains("build"), ml::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Minor findings.

TEST_CASE("cosine_forward_backward rejects a non-cosine also when dcos aliases cos") {
  Mat<double> cos = Mat<double>::Constant(2, 3, 0.2);
  cos(1, 2) = 5.0;
  const Eigen::VectorXi y = labels_mod(2, 3);
  CHECK_THROWS_WITH_AS((void)ml::cosine_forward_backward(ml::CosFace<double>{}, cos, y, cos),
                       doctest::Contains("cos(1, 2) = 5"), ml::invalid_argument);
}

TEST_CASE("SubsetOptions::regulariser out of the enumeration is rejected") {
  const Case c = random_case(2, 4, 6, 510);
  Eigen::VectorXi act(2), local(2);
  act << 0, 3;
  local << 0, 1;
  Mat<double> dX(2, 4), dW(6, 4);
  ml::SubsetWorkspace<double> sws;
  ml::SubsetOptions o;
  o.regulariser = static_cast<ml::SubsetRegulariser>(7);
  const ml::ActiveSet set{act.cast<ml::Index>(), local.cast<ml::Index>()};
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(ml::CosFace<double>{}, c.X, c.W, set, {dX, dW}, sws, o),
                       doctest::Contains("regulariser = 7"), ml::invalid_argument);
}

TEST_CASE("even_class_range rejects a negative class count") {
  CHECK_THROWS_AS((void)ml::even_class_range(-5, 2, 0), ml::invalid_argument);
  CHECK_THROWS_AS((void)ml::even_class_range(10, 0, 0), ml::invalid_argument);
  CHECK(ml::even_class_range(10, 3, 2).count == 3);
}

TEST_CASE("a Workspace used by two threads at once throws instead of mixing buffers") {
  const Case c = random_case(64, 32, 2000, 511);
  const Eigen::VectorXi y = labels_mod(64, 2000);
  ml::Workspace<double> ws;
  std::atomic<int> rejected{0}, wrong{0};
  const auto ref = ml::forward_backward(ml::CosFace<double>{}, c.X, c.W, y);
  const auto worker = [&] {
    Mat<double> dX(64, 32), dW(2000, 32);
    for (int k = 0; k < 40; ++k) {
      try {
        const double loss = ml::forward_backward(ml::CosFace<double>{}, c.X, c.W, y, {dX, dW}, ws);
        if (loss != ref.loss || (dX - ref.dX).cwiseAbs().maxCoeff() > 1e-12) ++wrong;
      } catch (const ml::invalid_argument&) {
        ++rejected;  // "in use by another call", or a forward consumed by the other thread
      }
    }
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  CHECK(wrong.load() == 0);
}

// ---------------------------------------------------------------------------------------------
// #17: the regulariser is reported apart from the cross-entropy; bytes_required's default is
// the entry points' automatic block.

TEST_CASE("AdaptiveMargin: Result reports the regulariser included in the loss") {
  const Case c = random_case(4, 5, 6, 512);
  const Eigen::VectorXi y = labels_mod(4, 6);
  const ml::Vector<double> margins = ml::Vector<double>::Constant(6, 0.35);
  const ml::AdaptiveMargin<double> am{30, margins, 70};
  const auto r = ml::forward_backward(am, c.X, c.W, y);
  CHECK(r.regulariser == doctest::Approx(-70 * 0.35));  // -lambda_m mean(m), all classes
  // The cross-entropy part equals the same loss with the margins fixed (no regulariser).
  const auto fixed = ml::forward_backward(ml::class_margins(ml::CosFace<double>{30, 0}, margins), c.X, c.W, y);
  CHECK(r.loss - r.regulariser == doctest::Approx(fixed.loss).epsilon(1e-12));
  CHECK(fixed.regulariser == 0.0);
}

TEST_CASE("Workspace::bytes_required defaults to the automatic block, as Options{} does") {
  // 256 x 2,000,000 float cosines exceed the 512 MiB budget: automatic blocks of 8 MiB.
  const std::size_t automatic = ml::Workspace<float>::bytes_required(256, 64, 2000000);
  const std::size_t dense = ml::Workspace<float>::bytes_required(256, 64, 2000000, 2000000);
  const std::size_t blocks = ml::Workspace<float>::bytes_required(256, 64, 2000000, 8192);
  CHECK(automatic == blocks);
  CHECK(automatic < dense / 50);
  // Small problems are dense either way.
  CHECK(ml::Workspace<float>::bytes_required(8, 4, 100) == ml::Workspace<float>::bytes_required(8, 4, 100, 100));
}

TEST_CASE("labels may be a std::vector of any integer type, viewed without a copy") {
  const Case c = random_case(5, 4, 7, 513);
  const Eigen::VectorXi y = labels_mod(5, 7);
  const std::vector<int> yv(y.data(), y.data() + 5);
  const std::vector<std::uint64_t> yu(y.data(), y.data() + 5);
  const auto ref = ml::forward_backward(ml::ArcFace<double>{}, c.X, c.W, y);
  const auto rv = ml::forward_backward(ml::ArcFace<double>{}, c.X, c.W, yv);
  const auto ru = ml::forward_backward(ml::ArcFace<double>{}, c.X, c.W, yu);
  CHECK(rv.loss == ref.loss);
  CHECK(ru.loss == ref.loss);
  CHECK((rv.dW - ref.dW).cwiseAbs().maxCoeff() == 0.0);
  CHECK(ml::target_cosines(c.X, c.W, yv) == ml::target_cosines(c.X, c.W, y));
  std::vector<int> bad = yv;
  bad[3] = 7;
  CHECK_THROWS_WITH_AS((void)ml::forward_backward(ml::ArcFace<double>{}, c.X, c.W, bad),
                       doctest::Contains("labels[3] = 7"), ml::invalid_argument);
}

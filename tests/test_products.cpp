// The product backend: the one the build asked for computes the products (no silent fallback),
// and its float results agree with the double engine on strided views, ragged tiles and blocks.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>

#include <marginloss/products.hpp>

#include "support.hpp"

using namespace mltest;

#ifndef MARGINLOSS_EXPECTED_PRODUCTS
#error "tests/CMakeLists.txt defines MARGINLOSS_EXPECTED_PRODUCTS, the backend the build links"
#endif

TEST_CASE("products: the backend in use is the one the build links") {
  const std::string expected = MARGINLOSS_EXPECTED_PRODUCTS;
  CHECK(std::string(ml::products_backend<float>()) == expected);
  // oneDNN has no double GEMM: double products stay with Eigen (or BLAS).
  const std::string expected_double = expected == "oneDNN" ? "Eigen" : expected;
  CHECK(std::string(ml::products_backend<double>()) == expected_double);
  MESSAGE("products: float ", std::string(ml::products_backend<float>()), ", double ", std::string(ml::products_backend<double>()));
}

namespace {

double max_abs(const Mat<double>& a) { return a.cwiseAbs().maxCoeff(); }

}  // namespace

TEST_CASE("products: float through the backend agrees with double, on strided W, ragged tiles and blocks") {
  // C = 700: tiles of 88 classes (detail/plan.hpp), the last one ragged; W is every other
  // column pair of a wider matrix, so its rows are strided (outerStride 2 D).
  const Index B = 37, D = 70, C = 700;
  const Case c = random_case(B, D, C, 0x70726f64ull);
  const Mat<float> X = c.X.cast<float>();
  Mat<float> wide(C, 2 * D);
  wide.setConstant(std::nanf(""));  // never read
  wide.leftCols(D) = c.W.cast<float>();
  const Eigen::Ref<const Mat<float>> W = wide.leftCols(D);
  REQUIRE(W.outerStride() == 2 * D);

  const ml::CosFace<float> f32{30.f, 0.35f};
  const ml::CosFace<double> f64{30.0, 0.35};
  const auto ref = ml::forward_backward(f64, c.X, c.W, c.labels);
  for (const Index block : {Index(0), Index(256), Index(100)}) {
    CAPTURE(block);
    ml::Options o;
    o.class_block = block;
    const auto r = ml::forward_backward(f32, X, W, c.labels, o);
    CHECK(std::fabs(static_cast<double>(r.loss) - ref.loss) <= 1e-5 * std::fabs(ref.loss));
    CHECK((r.dX.cast<double>() - ref.dX).cwiseAbs().maxCoeff() <= 1e-4 * max_abs(ref.dX));
    CHECK((r.dW.cast<double>() - ref.dW).cwiseAbs().maxCoeff() <= 1e-4 * max_abs(ref.dW));
    // The same call again gives the same bits (a fixed thread count).
    const auto again = ml::forward_backward(f32, X, W, c.labels, o);
    CHECK(std::memcmp(&again.loss, &r.loss, sizeof r.loss) == 0);
    CHECK(std::memcmp(again.dX.data(), r.dX.data(), sizeof(float) * static_cast<std::size_t>(r.dX.size())) == 0);
    CHECK(std::memcmp(again.dW.data(), r.dW.data(), sizeof(float) * static_cast<std::size_t>(r.dW.size())) == 0);
  }
}

#include <marginloss/marginloss.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>

int main() {
  namespace ml = marginloss;
  ml::RowMatrix<float> X = ml::RowMatrix<float>::Random(4, 8), W = ml::RowMatrix<float>::Random(10, 8);
  Eigen::VectorXi y(4);
  y << 1, 3, 5, 7;
  const auto r = ml::forward_backward(ml::ArcFace<float>{64, 0.5f}, X, W, y);
  std::printf("consumer: loss = %.6f, products: %s\n", r.loss, ml::products_backend<float>());
#if defined(MARGINLOSS_CONSUMER_EXPECT_PRODUCTS)
  if (std::strcmp(ml::products_backend<float>(), MARGINLOSS_CONSUMER_EXPECT_PRODUCTS) != 0) return 1;
#endif
  return std::isfinite(r.loss) && r.dX.allFinite() && r.dW.allFinite() ? 0 : 1;
}

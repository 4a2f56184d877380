// The matrix types of the Fashion-MNIST demo (row-major float, as marginloss takes them).
#pragma once
#include <marginloss/types.hpp>  // Eigen/Core, marginloss::RowMatrix

namespace fashion_mnist {

namespace ml = marginloss;
using Mat = ml::RowMatrix<float>;
using RowVec = Eigen::RowVectorXf;

constexpr double kPi = 3.14159265358979323846;

}  // namespace fashion_mnist

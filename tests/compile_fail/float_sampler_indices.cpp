// Must not compile: floating-point sample indices (1.7 would silently become 1).
#include <marginloss/sampling/adaptive_sampler.hpp>
namespace ml = marginloss;
int main() {
  ml::AdaptiveSampler s(10);
  Eigen::VectorXd idx(1);
  idx << 1.7;
  Eigen::VectorXi correct(1);
  correct << 1;
  s.update(idx, correct);
  return 0;
}

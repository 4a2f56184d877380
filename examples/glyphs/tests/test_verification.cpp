// The verification metrics (examples/common/verification.hpp) on constructed scores whose
// answers are known by hand.
#include <doctest/doctest.h>

#include <vector>

#include "../../common/verification.hpp"

namespace mx = marginloss_examples;

TEST_CASE("AUC: perfect, reversed, ties and a hand-counted case") {
  {
    std::vector<float> pos{0.9f, 0.8f}, neg{0.1f, 0.2f, 0.3f};
    CHECK(mx::verify_scores(pos, neg).auc == doctest::Approx(1.0));
  }
  {
    std::vector<float> pos{0.1f}, neg{0.5f, 0.6f};
    CHECK(mx::verify_scores(pos, neg).auc == doctest::Approx(0.0));
  }
  {
    std::vector<float> pos{0.5f}, neg{0.5f};  // one tie: 1/2
    CHECK(mx::verify_scores(pos, neg).auc == doctest::Approx(0.5));
  }
  {
    // pos {0.4, 0.7}, neg {0.3, 0.5, 0.7}: 0.4 beats 1; 0.7 beats 2 and ties 1 -> (1 + 2.5) / 6.
    std::vector<float> pos{0.7f, 0.4f}, neg{0.5f, 0.7f, 0.3f};
    CHECK(mx::verify_scores(pos, neg).auc == doctest::Approx(3.5 / 6.0));
  }
}

TEST_CASE("TAR at FAR: the threshold lets at most floor(FAR * impostors) impostors through") {
  // 1000 impostors 0.000 .. 0.999; genuine 0.9905, 0.9955, 0.9995 and 0.5.
  std::vector<float> neg, pos{0.5f, 0.9905f, 0.9955f, 0.9995f};
  for (int k = 0; k < 1000; ++k) neg.push_back(static_cast<float>(k) / 1000.f);
  const mx::Verification v = mx::verify_scores(pos, neg);
  CHECK(v.genuine == 4);
  CHECK(v.impostor == 1000);
  // FAR 1e-2: 10 impostors may pass, threshold = 11th largest = 0.989: three genuine above.
  CHECK(mx::tar_at_far(pos, neg, 1e-2) == doctest::Approx(0.75));
  // FAR 5e-3: threshold 0.994: two above.
  CHECK(mx::tar_at_far(pos, neg, 5e-3) == doctest::Approx(0.5));
  // FAR 1e-3: threshold 0.998: one above.
  CHECK(mx::tar_at_far(pos, neg, 1e-3) == doctest::Approx(0.25));
  // FAR below 1/1000: threshold is the largest impostor, 0.999: still one above.
  CHECK(mx::tar_at_far(pos, neg, 1e-4) == doctest::Approx(0.25));
  // FAR 1: everything accepted.
  CHECK(mx::tar_at_far(pos, neg, 1.0) == doctest::Approx(1.0));
  // A genuine score equal to the threshold is rejected (strictly above).
  std::vector<float> tie_pos{0.998f}, tie_neg(neg);
  CHECK(mx::tar_at_far(tie_pos, tie_neg, 1e-3) == doctest::Approx(0.0));
  // The ROC grid is increasing in FAR and TAR.
  for (std::size_t k = 1; k < v.far_grid.size(); ++k) {
    CHECK(v.far_grid[k] > v.far_grid[k - 1]);
    CHECK(v.tar_grid[k] >= v.tar_grid[k - 1]);
  }
}

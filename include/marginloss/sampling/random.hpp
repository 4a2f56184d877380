// marginloss: the pseudo-random generator of the samplers.
//
// xoshiro256** (Blackman and Vigna, 2018) seeded through splitmix64, with its own uniform
// double and unbiased integer draws. Every operation is integer arithmetic or one exact
// conversion, so a seed gives the same stream on every platform and compiler -- unlike the
// standard library's distributions, whose algorithms are implementation-defined.
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../errors.hpp"
#include "../types.hpp"

MARGINLOSS_NAMESPACE_BEGIN

/// xoshiro256** (Blackman and Vigna, 2018) seeded through splitmix64, with its own uniform
/// double and unbiased integer draws: integer arithmetic only, so a seed gives the same stream
/// on every platform and compiler (the standard library's distributions are
/// implementation-defined).
class Xoshiro256 {
 public:
  /// Seeded with reseed(seed).
  explicit Xoshiro256(std::uint64_t seed = 0) { reseed(seed); }

  /// Restarts the stream: the four state words are four splitmix64 outputs from `seed`, so no
  /// seed (0 included) gives the all-zero state.
  void reseed(std::uint64_t seed) {
    std::uint64_t z = seed;
    for (auto& w : s_) w = splitmix64(z);
  }

  /// The next 64 random bits: rotl(s1 * 5, 7) * 9, then the xoshiro256 state transition.
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  /// Uniform integer in [0, n), n >= 1, without modulo bias (rejection of the short last range).
  std::uint64_t below(std::uint64_t n) {
    if (n == 0) detail::fail("Xoshiro256::below: n must be >= 1");
    const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
    for (;;) {
      const std::uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

  /// splitmix64 step: advances `state` and returns the next output.
  static std::uint64_t splitmix64(std::uint64_t& state) {
    state += 0x9E3779B97F4A7C15ULL;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

MARGINLOSS_NAMESPACE_END

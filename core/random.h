// Deterministic randomness keyed by (seed, stream ids), never by a per-rank stream.
//
// A sample's augmentation draws from Rng(derive_seed(seed, {epoch, sample})), so the same
// global batch gets the same randomness whatever the number of ranks.
#pragma once

#include <cstdint>
#include <initializer_list>

namespace kdseg {

// SplitMix64 finaliser: a bijective mix of 64 bits.
constexpr uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// A seed for the stream named by `ids` under `seed`; distinct id lists give independent seeds.
uint64_t derive_seed(uint64_t seed, std::initializer_list<uint64_t> ids);

// xoshiro256** with explicit, platform-independent distributions.
class Rng {
 public:
  explicit Rng(uint64_t seed);

  uint64_t next_u64();
  // Uniform in [0, 1) with 53 random bits.
  double uniform();
  double uniform(double low, double high) { return low + (high - low) * uniform(); }
  // Uniform integer in [low, high] (inclusive), without modulo bias.
  int64_t uniform_int(int64_t low, int64_t high);
  // Standard normal (Box-Muller; no cached second value, so the stream position is simple).
  double normal();
  bool bernoulli(double p) { return uniform() < p; }

 private:
  uint64_t s_[4];
};

}  // namespace kdseg

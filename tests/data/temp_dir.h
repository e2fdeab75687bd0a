// A fresh folder under the system temp folder, removed when the object goes away.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include "data/synth.h"

namespace kdseg::test {

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("kdseg-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A small synthetic dataset written into `path`.
inline data::SynthSummary write_small_dataset(const std::string& path, int cases, int64_t size, int64_t slices,
                                              data::Layout layout = data::Layout::kLits, uint64_t seed = 0) {
  data::SynthOptions options;
  options.layout = layout;
  options.cases = cases;
  options.size = size;
  options.slices = slices;
  options.seed = seed;
  return data::write_synthetic_dataset(path, options);
}

}  // namespace kdseg::test

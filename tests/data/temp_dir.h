// A fresh folder under the system temp folder, removed when the object goes away.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include "data/prepared_store.h"
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

// write_small_dataset into dir/raw, prepared at native size in two folds into dir/p.h5, keeping
// `kept` slices; returns the store's path.
inline std::string write_small_store(const std::string& dir, int cases, int64_t size, int64_t slices,
                                     data::SliceSelection kept) {
  write_small_dataset(dir + "/raw", cases, size, slices);
  data::PrepareOptions p;
  p.input = dir + "/raw";
  p.output = dir + "/p.h5";
  p.size = 0;
  p.folds = 2;
  p.slices = kept;
  data::prepare_store(p);
  return p.output;
}

}  // namespace kdseg::test

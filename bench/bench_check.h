// What a benchmark checks besides its time (nccl-tests' habit): the largest error of a result
// against the baseline or reference it runs side by side, printed on the row of its time, and a
// non-zero exit status when an error passes its tolerance.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace kdseg::bench {

// max |a - b| over b's largest magnitude (max |a - b| when b is all zeros); infinity when
// the shapes differ or either holds a non-finite value, so that such a result always fails.
inline double relative_error(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return std::numeric_limits<double>::infinity();
  const at::Tensor x = a.detach().to(at::kDouble).cpu(), y = b.detach().to(at::kDouble).cpu();
  if (!x.isfinite().all().item<bool>() || !y.isfinite().all().item<bool>()) {
    return std::numeric_limits<double>::infinity();
  }
  if (x.numel() == 0) return 0;
  const double scale = y.abs().max().item<double>();
  const double error = (x - y).abs().max().item<double>();
  return scale > 0 ? error / scale : error;
}

// The largest error of a run and whether any passed the tolerance.
class ErrorCheck {
 public:
  explicit ErrorCheck(double tolerance) : tolerance_(tolerance) {}
  // Records one row's error and returns it, for printing on the row.
  double record(double error) {
    failed_ = failed_ || !(error <= tolerance_);
    return error;
  }
  bool failed() const { return failed_; }
  // 0, or 1 after a message naming the program and the tolerance.
  int exit_status(const char* program) const {
    if (failed_)
      std::fprintf(stderr, "%s: an error column passed the tolerance %.1e: the result is wrong\n", program, tolerance_);
    return failed_ ? 1 : 0;
  }

 private:
  double tolerance_;
  bool failed_ = false;
};

}  // namespace kdseg::bench

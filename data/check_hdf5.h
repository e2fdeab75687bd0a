// KDSEG_CHECK_HDF5: checks an HDF5 return value (herr_t or hid_t; negative means failure) and
// turns HDF5's error stack into a kdseg::Error naming the call and HDF5's own reasons.
// Header-only so that kdseg::core itself does not depend on HDF5.
#pragma once

#include <hdf5.h>

#include <string>

#include "core/error.h"

namespace kdseg::detail {
inline std::string hdf5_error_stack() {
  std::string text;
  auto walk = [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
    auto* s = static_cast<std::string*>(out);
    if (!s->empty()) *s += "; ";
    *s += e->desc ? e->desc : "?";
    if (e->func_name) *s += std::string(" in ") + e->func_name;
    (void)n;
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk, &text);
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? std::string("no HDF5 error recorded") : text;
}
}  // namespace kdseg::detail

// Evaluates `call` once and yields its value, throwing when it is negative.
#define KDSEG_CHECK_HDF5(call)                                              \
  [&]() {                                                                   \
    auto kdseg_h5_rc_ = (call);                                             \
    if (kdseg_h5_rc_ < 0) {                                                 \
      KDSEG_THROW(#call, " failed: ", ::kdseg::detail::hdf5_error_stack()); \
    }                                                                       \
    return kdseg_h5_rc_;                                                    \
  }()

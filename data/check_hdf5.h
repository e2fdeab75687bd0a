// KDSEG_CHECK_HDF5: checks an HDF5 return value (herr_t or hid_t; negative means failure) and
// turns HDF5's error stack into a kdseg::Error naming the call and HDF5's own reasons. When the
// stack holds a system error (a full disk, a file size limit), the message is that error and
// the file it happened on, not the stack's dozen lines.
#pragma once

#include <hdf5.h>

#include <string>

#include "core/error.h"

namespace kdseg::detail {
// "No space left on device on <file>" from an HDF5 file driver's description of a failed
// system call ("..., filename = '<file>', ..., errno = 28, error message = '...', ..."), or ""
// when `desc` is not one.
inline std::string system_error_of(const std::string& desc) {
  const auto field = [&](const std::string& name) {
    const size_t at = desc.find(name + " = '");
    if (at == std::string::npos) return std::string();
    const size_t begin = at + name.size() + 4, end = desc.find('\'', begin);
    return end == std::string::npos ? std::string() : desc.substr(begin, end - begin);
  };
  const std::string message = field("error message"), file = field("filename");
  if (message.empty()) return "";
  return file.empty() ? message : message + " on " + file;
}

// HDF5's error stack as one line (and cleared); `system` tells whether a system call failed.
inline std::string hdf5_error_stack(bool* system = nullptr) {
  std::string system_error;
  auto find_system_error = [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
    auto* s = static_cast<std::string*>(out);
    if (s->empty() && e->desc) *s = system_error_of(e->desc);
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, find_system_error, &system_error);
  if (system) *system = !system_error.empty();
  if (!system_error.empty()) {
    // The system's reason, then HDF5's outermost one ("unable to open file in H5Fopen").
    std::string outer;
    auto first = [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
      auto* s = static_cast<std::string*>(out);
      if (n == 0 && e->desc) *s = std::string(e->desc) + (e->func_name ? std::string(" in ") + e->func_name : "");
      return 0;
    };
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, first, &outer);
    H5Eclear2(H5E_DEFAULT);
    return outer.empty() ? system_error : system_error + " (HDF5: " + outer + ")";
  }
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
// A failed system call inside HDF5 (a full disk) is a kdseg::IoError.
#define KDSEG_CHECK_HDF5(call)                                                                      \
  [&]() {                                                                                           \
    auto kdseg_h5_rc_ = (call);                                                                     \
    if (kdseg_h5_rc_ < 0) {                                                                         \
      bool kdseg_h5_system_ = false;                                                                \
      std::string kdseg_h5_text_ = ::kdseg::detail::hdf5_error_stack(&kdseg_h5_system_);            \
      std::string kdseg_h5_message_ = ::kdseg::detail::concat(#call, " failed: ", kdseg_h5_text_);  \
      if (kdseg_h5_system_) ::kdseg::detail::throw_io_error(__FILE__, __LINE__, kdseg_h5_message_); \
      ::kdseg::detail::throw_error(__FILE__, __LINE__, kdseg_h5_message_);                          \
    }                                                                                               \
    return kdseg_h5_rc_;                                                                            \
  }()

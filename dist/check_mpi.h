// KDSEG_CHECK_MPI: turns an MPI return code into a kdseg::Error naming the call.
// Header-only so that kdseg::core itself does not depend on MPI; include it where MPI is used.
#pragma once

#include <mpi.h>

#include <string>

#include "core/error.h"

namespace kdseg::detail {
inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "unknown MPI error";
  return std::string(text, static_cast<size_t>(length));
}
}  // namespace kdseg::detail

#define KDSEG_CHECK_MPI(call)                                                                                \
  do {                                                                                                       \
    const int kdseg_mpi_rc_ = (call);                                                                        \
    if (kdseg_mpi_rc_ != MPI_SUCCESS) {                                                                      \
      KDSEG_THROW(#call, " failed: ", ::kdseg::detail::mpi_error_string(kdseg_mpi_rc_), " (MPI error code ", \
                  kdseg_mpi_rc_, ")");                                                                       \
    }                                                                                                        \
  } while (false)

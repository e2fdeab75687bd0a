// Backend constructors behind make_communicator(); internal to kdseg::dist.
#pragma once

#include <memory>
#include <string>

#include "dist/communicator.h"

namespace kdseg::dist::detail {

std::unique_ptr<Communicator> make_local_communicator();
// Defined only when the backend is compiled in (core/build_config.h).
std::unique_ptr<Communicator> make_mpi_communicator(const CommunicatorOptions& options);
std::unique_ptr<Communicator> make_nccl_communicator(const CommunicatorOptions& options);

// MPI counts are int, so the MPI backend reduces and broadcasts larger tensors in pieces of at
// most this many elements (2^30 by default). Returns the previous value; tests set it small.
int64_t set_mpi_piece_elements(int64_t elements);

// True when MPI runs with MPI_THREAD_MULTIPLE (false without MPI).
bool mpi_supports_threads();

// Logs the reason with the rank prefix and ends the process with status 1; used by abort().
[[noreturn]] void die(const std::string& reason) noexcept;

}  // namespace kdseg::dist::detail

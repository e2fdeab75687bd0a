// Shared main() pieces for tests run under `mpiexec -n N`: every rank runs every test, only
// rank 0 prints, and the job fails when any rank failed. Tests reach every collective before
// asserting, so a failed check on one rank cannot leave another waiting.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "dist/communicator.h"
#include "tests/data/temp_dir.h"

namespace kdseg::test {

// The world communicator of the test job (MPI backend).
dist::Communicator& world();

// True on every rank when `ok` is true on every rank (collective).
bool all_ranks(bool ok);

// A temporary folder made by rank 0 (which keeps it in `owner`) and named to every rank (collective).
std::string shared_folder(std::unique_ptr<TempDir>& owner);

}  // namespace kdseg::test

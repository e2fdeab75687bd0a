// KDSEG_CHECK_MPI and rank-aware errors under a real `mpiexec -n N` job.
// Every rank reaches every collective before asserting, so a failing check cannot hang the others.
#include <gtest/gtest.h>
#include <mpi.h>

#include "core/error.h"
#include "dist/check_mpi.h"

namespace {

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}
int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// True on every rank when `ok` is true on every rank.
bool all_ranks(bool ok) {
  int local = ok ? 1 : 0, global = 0;
  MPI_Allreduce(&local, &global, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return global == 1;
}

TEST(CheckMpi, FailedCallBecomesErrorNamingCallAndReason) {
  std::string what;
  try {
    const int payload = 1;
    // A destination rank that does not exist: MPI reports MPI_ERR_RANK.
    KDSEG_CHECK_MPI(MPI_Send(&payload, 1, MPI_INT, world_size() + 5, 0, MPI_COMM_WORLD));
  } catch (const kdseg::Error& e) {
    what = e.what();
  }
  const bool ok = what.find("MPI_Send(&payload") != std::string::npos &&
                  what.find("MPI error code") != std::string::npos &&
                  what.find("[rank " + std::to_string(world_rank()) + "]") == 0;
  EXPECT_TRUE(all_ranks(ok)) << "rank " << world_rank() << " saw: " << what;
}

TEST(CheckMpi, SuccessfulCollectiveGivesHandComputedSum) {
  int value = world_rank() + 1, sum = 0;
  KDSEG_CHECK_MPI(MPI_Allreduce(&value, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD));
  const int n = world_size();
  EXPECT_EQ(sum, n * (n + 1) / 2);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  // Errors are returned to the caller (and become exceptions) instead of aborting the job.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  kdseg::set_process_rank(world_rank(), world_size());
  ::testing::InitGoogleTest(&argc, argv);
  if (world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int result = RUN_ALL_TESTS();
  // The job fails when any rank failed.
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}

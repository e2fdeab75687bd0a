// KDSEG_CHECK_CUDA and KDSEG_CHECK_NCCL turn status codes into errors naming the call; the
// codes are passed directly, so no GPU is needed.
#include <gtest/gtest.h>

#include "dist/check_cuda.h"

namespace {

TEST(CheckCuda, ErrorNamesCallAndCudaReason) {
  try {
    KDSEG_CHECK_CUDA(cudaErrorInvalidValue);
    FAIL();
  } catch (const kdseg::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cudaErrorInvalidValue failed: cudaErrorInvalidValue: invalid argument"), std::string::npos)
        << what;
  }
  EXPECT_NO_THROW(KDSEG_CHECK_CUDA(cudaSuccess));
}

TEST(CheckNccl, ErrorNamesCallAndNcclReason) {
  try {
    KDSEG_CHECK_NCCL(ncclInvalidArgument);
    FAIL();
  } catch (const kdseg::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("ncclInvalidArgument failed: invalid argument"), std::string::npos) << what;
    EXPECT_NE(what.find("NCCL code 4"), std::string::npos) << what;
  }
  EXPECT_NO_THROW(KDSEG_CHECK_NCCL(ncclSuccess));
}

}  // namespace

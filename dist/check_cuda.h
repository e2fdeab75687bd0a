// KDSEG_CHECK_CUDA and KDSEG_CHECK_NCCL: turn CUDA runtime and NCCL status codes into
// kdseg::Error naming the call, the error name and its description.
// Header-only so that kdseg::core itself needs neither; include it where they are used.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "core/error.h"

#define KDSEG_CHECK_CUDA(call)                                                                                     \
  do {                                                                                                             \
    const cudaError_t kdseg_cuda_rc_ = (call);                                                                     \
    if (kdseg_cuda_rc_ != cudaSuccess) {                                                                           \
      KDSEG_THROW(#call, " failed: ", cudaGetErrorName(kdseg_cuda_rc_), ": ", cudaGetErrorString(kdseg_cuda_rc_)); \
    }                                                                                                              \
  } while (false)

#define KDSEG_CHECK_NCCL(call)                                                            \
  do {                                                                                    \
    const ncclResult_t kdseg_nccl_rc_ = (call);                                           \
    if (kdseg_nccl_rc_ != ncclSuccess && kdseg_nccl_rc_ != ncclInProgress) {              \
      KDSEG_THROW(#call, " failed: ", ncclGetErrorString(kdseg_nccl_rc_), " (NCCL code ", \
                  static_cast<int>(kdseg_nccl_rc_), ")");                                 \
    }                                                                                     \
  } while (false)

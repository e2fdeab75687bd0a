// Collectives that autograd can differentiate, for quantities that feed a loss (the DML
// statistics, SyncBatchNorm's moments, evaluation metrics).
//
// Gradient convention: the backward of each collective sums the upstream gradient over ranks.
// Every rank then holds the gradient of the sum of all ranks' losses with respect to its own
// inputs, and the data-parallel average (1/N) turns that into the gradient of the mean loss,
// which is the single-process gradient when each rank computes the same global-batch loss.
// All functions are collective.
#pragma once

#include <ATen/core/Tensor.h>

#include "core/losses/distill.h"
#include "core/losses/dml.h"
#include "dist/communicator.h"

namespace kdseg::dist {

// Element-wise sum over ranks.
at::Tensor all_reduce_sum_with_grad(const at::Tensor& tensor, Communicator& comm);

// Concatenation over ranks along dim 0, in rank order.
at::Tensor all_gather_with_grad(const at::Tensor& tensor, Communicator& comm);

// The reducer that makes DML a global-batch loss: with only the dataset reduction it
// all-reduces the batch-summed statistics ([1,C]); with image or class reductions it gathers
// the per-image rows. The target maxima travel in a second, small collective.
losses::DmlStatisticsReducer global_batch_dml_reducer(Communicator& comm, const losses::DmlOptions& options);

// Everything SegmentationObjective needs to compute global-batch losses over `comm`: the DML
// reducer above and a sum of pixel counts over ranks (on the communicator's device when the
// counts live there, so no host synchronisation). Identity for world size 1.
losses::GlobalBatch global_batch(Communicator& comm, const losses::DmlOptions& options);

}  // namespace kdseg::dist

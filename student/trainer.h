// The trainer, for teachers and students alike: the paper's UNet on a prepared store's fold,
// AdamW with parameter groups, warmup then linear decay, data parallel through kdseg::dist,
// exact resume, metrics.jsonl, validation by case.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>

#include "dist/communicator.h"
#include "student/train_config.h"

namespace kdseg::student {

struct TrainSummary {
  int64_t steps = 0;           // optimiser steps done, resumed ones included
  int64_t steps_this_run = 0;  // steps this invocation made
  int64_t skipped_steps = 0;
  double last_loss = 0;
  double best_dice = -1;  // mean tumour Dice over validation cases
  // The signal ("SIGTERM", ...) that stopped the run before its last step, with last.pt
  // written at the step every rank agreed on (core/stop_request.h); empty when it ran to its end.
  std::string stopped_by;
};

// The device this rank trains on: the CPU, or for --device cuda the node-local rank's GPU. Throws
// kdseg::Error when there is none, or when the backend cannot reduce CUDA tensors (MPI).
c10::Device training_device(const TrainConfig& config, const dist::Communicator& comm);

// Collective over `comm`. Throws kdseg::Error naming the problem (missing fold, bad option,
// non-finite loss at step N, ...).
TrainSummary train(const TrainConfig& config, dist::Communicator& comm);

}  // namespace kdseg::student

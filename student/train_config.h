// What a training run is given: the options of `kdseg train` and `kdseg distill` as typed
// fields (tools/ parses the command line into them) and their checks. The run record
// (core/run_record.h) writes them to config.json and every checkpoint, and says which of them a
// resume must keep.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/run_record.h"

namespace kdseg {
class FrozenModel;
}

namespace kdseg::student {

// The settings' enumerations belong to the run record (core/run_record.h).
using kdseg::ChannelsLast;
using kdseg::DmlReduction;
using kdseg::LabelKind;
using kdseg::LossKind;
using kdseg::TeacherMode;

// A run's settings (the record's fields) and what only this invocation is given.
struct TrainConfig : RunConfig {
  bool resume = false;                          // continue the run in output (its last.pt)
  bool force = false;                           // start over although output holds a run
  std::shared_ptr<FrozenModel> online_teacher;  // loaded by the caller for TeacherMode::kOnline
};

// Throws kdseg::Error naming the option and the value when the configuration cannot be trained
// on `world` ranks, among them a crop whose activations cannot fit in this machine's memory.
void check_config(const TrainConfig& config, int world);

// A lower bound on the bytes one rank holds for a training micro-batch (batch_size / accumulate
// / world crops of crop x crop pixels): the input and the activations the network keeps for its
// backward pass, which grow with the crop's area, the batch and the network's width.
double activation_bytes(const TrainConfig& config, int world);

// Throws kdseg::Error naming --crop-size and the estimate when activation_bytes exceeds
// `memory_bytes` (the machine's memory; check_config passes it).
void check_fits_in_memory(const TrainConfig& config, int world, double memory_bytes);

}  // namespace kdseg::student

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
// on `world` ranks.
void check_config(const TrainConfig& config, int world);

}  // namespace kdseg::student

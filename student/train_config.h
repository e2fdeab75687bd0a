// What a training run is given: the options of `kdseg train` and `kdseg distill` as typed
// fields (tools/ parses the command line into them), their checks, and their JSON form, which
// config.json and every checkpoint record (core/models/checkpoint.h) and a resume compares.
#pragma once

#include <c10/core/Device.h>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/enum_names.h"
#include "core/models/architecture.h"
#include "data/task.h"

namespace kdseg {
class FrozenModel;
}

namespace kdseg::student {

// What the student learns from in the store: its label (hard), boundary label smoothing of it
// (ls), or its raters (data/raters.h): their majority vote or one rater drawn per sample and
// epoch (hard), their mean or their mean weighted by agreement with the majority (soft).
enum class LabelKind { kHard, kSmoothed, kMajority, kRandom, kMean, kWeighted };
inline constexpr EnumName<LabelKind> kLabelKindNames[] = {
    {LabelKind::kHard, "hard", ""},         {LabelKind::kSmoothed, "ls", "boundary label smoothing"},
    {LabelKind::kMajority, "majority", ""}, {LabelKind::kRandom, "random", ""},
    {LabelKind::kMean, "mean", ""},         {LabelKind::kWeighted, "weighted", ""},
};
constexpr EnumNames<LabelKind> enum_names(EnumTag<LabelKind>) { return kLabelKindNames; }
bool is_rater_kind(LabelKind kind);       // majority, random, mean, weighted
bool is_soft_rater_kind(LabelKind kind);  // mean, weighted

// The objective: CE (or KL to soft labels) alone, DML alone, or the paper's 0.25 CE + 0.75 DML.
enum class LossKind { kCe, kDml, kCeDml };
inline constexpr EnumName<LossKind> kLossKindNames[] = {
    {LossKind::kCe, "ce", ""},
    {LossKind::kDml, "dml", ""},
    {LossKind::kCeDml, "ce+dml", "0.25 CE + 0.75 DML"},
};
constexpr EnumNames<LossKind> enum_names(EnumTag<LossKind>) { return kLossKindNames; }

// Where a distilled student's soft labels come from: none (`train`), a precomputed cache, or a
// teacher run inside each step on the augmented batch (as the reference implementation does).
enum class TeacherMode { kNone, kCache, kOnline };
inline constexpr EnumName<TeacherMode> kTeacherModeNames[] = {
    {TeacherMode::kNone, "none", "train's"},
    {TeacherMode::kCache, "cache", "soft labels from --cache"},
    {TeacherMode::kOnline, "online", "run --teacher in every step"},
};
constexpr EnumNames<TeacherMode> enum_names(EnumTag<TeacherMode>) { return kTeacherModeNames; }

// DML statistics over the global batch (the same loss on any number of ranks) or per rank.
enum class DmlReduction { kGlobal, kLocal };
inline constexpr EnumName<DmlReduction> kDmlReductionNames[] = {
    {DmlReduction::kGlobal, "global", "DML over the global batch, the same loss on any number of ranks"},
    {DmlReduction::kLocal, "local", "per rank"},
};
constexpr EnumNames<DmlReduction> enum_names(EnumTag<DmlReduction>) { return kDmlReductionNames; }

// The memory layout of weights and activations.
enum class ChannelsLast { kAuto, kOn, kOff };
inline constexpr EnumName<ChannelsLast> kChannelsLastNames[] = {
    {ChannelsLast::kAuto, "auto", "on CUDA and AVX-512 CPUs, where it is faster"},
    {ChannelsLast::kOn, "true", ""},
    {ChannelsLast::kOn, "1", kAlias},
    {ChannelsLast::kOn, "on", kAlias},
    {ChannelsLast::kOn, "yes", kAlias},
    {ChannelsLast::kOff, "false", ""},
    {ChannelsLast::kOff, "0", kAlias},
    {ChannelsLast::kOff, "off", kAlias},
    {ChannelsLast::kOff, "no", kAlias},
};
constexpr EnumNames<ChannelsLast> enum_names(EnumTag<ChannelsLast>) { return kChannelsLastNames; }

struct TrainConfig {
  std::string data;                // prepared store
  std::string output;              // folder: checkpoints, metrics.jsonl, config.json
  int fold = 0;                    // held out for validation; every other fold trains ...
  std::vector<int> exclude_folds;  // ... except these (e.g. the fold a teacher's temperature was fitted on)
  models::Encoder arch = models::Encoder::kResNet18d;
  double width = 1.0;  // channel multiplier (tests and quick runs)
  double dropout = 0.1;
  data::TaskSpec task;  // tumor
  LabelKind labels = LabelKind::kHard;
  double ls_epsilon = 0.5;
  int64_t ls_kernel = 3;
  LossKind loss = LossKind::kCeDml;
  int64_t epochs = 0;  // one of epochs and max_steps
  int64_t max_steps = 0;
  int64_t batch_size = 8;  // global, across ranks
  int64_t accumulate = 1;  // micro-batches per optimiser step
  int64_t crop = 384;
  double lr = 1e-4;  // encoder; decoder and heads get 10x
  double weight_decay = 1e-2;
  double warmup = 0.01;  // fraction of the steps
  double clip_grad = 0;  // max gradient norm, 0: off
  uint64_t seed = 0;
  int workers = 2;
  int64_t log_every = 10;        // steps
  int64_t validate_every = 1;    // epochs (0: never)
  int64_t checkpoint_every = 0;  // steps (0: at the end of each epoch only)
  int64_t stop_after = 0;        // stop this invocation after N steps (0: run to the end)
  bool resume = false;           // continue the run in output (its last.pt)
  bool force = false;            // start over although output holds a run
  bool skip_nonfinite = false;
  bool deterministic = false;
  // CPU, or CUDA: one GPU per rank (the node-local rank's), collectives over NCCL, cuDNN
  // autotuning (off with `deterministic`) and batches in page-locked memory.
  c10::DeviceType device = c10::kCPU;
  // Weights, and so activations, channels-last (NHWC) or contiguous (NCHW); kAuto chooses the
  // faster on the device (core/models/unet.h, channels_last_is_faster).
  ChannelsLast channels_last = ChannelsLast::kAuto;
  Precision precision = Precision::kAuto;

  // Distillation (`kdseg distill`).
  TeacherMode teacher_mode = TeacherMode::kNone;
  std::string cache;    // cache folder (TeacherMode::kCache)
  std::string teacher;  // teacher file: its hash is checked against the cache; online: the teacher
  std::shared_ptr<FrozenModel> online_teacher;  // loaded by the caller for TeacherMode::kOnline
  double temperature = 1.0;                     // softmax temperature of the soft labels and the KL term
  DmlReduction dml_reduction = DmlReduction::kGlobal;
};

// Throws kdseg::Error naming the option and the value when the configuration cannot be trained
// on `world` ranks.
void check_config(const TrainConfig& config, int world);

// The configuration as config.json and checkpoints record it (enumerations by name).
nlohmann::json config_json(const TrainConfig& config);

}  // namespace kdseg::student

// The run record: what a training run (`kdseg train`, `kdseg distill`) was given, and what it
// logged. This module owns its schema; every writer and reader goes through it, so each key is
// spelled once (docs/formats.md describes the files):
//   <output>/config.json    RunConfig as JSON, with "version" (kRunRecordVersion); every
//                           checkpoint of the run carries the same JSON (core/models/checkpoint.h)
//   <output>/metrics.jsonl  one StepLine or ValidationLine per line, appended as the run goes
//
// A field of RunConfig either shapes the run (a resume must give it the same value) or may
// change on resume; the table in run_record.cpp says which for every field, and a field enters
// the JSON only through that table, so a new field is compared on resume unless it is allowed
// to change explicitly, with the reason.
#pragma once

#include <c10/core/Device.h>
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/enum_names.h"
#include "core/models/architecture.h"
#include "core/task_spec.h"

namespace kdseg {

// The files of a run's output folder.
inline constexpr const char* kRunConfigFile = "config.json";
inline constexpr const char* kRunMetricsFile = "metrics.jsonl";
inline constexpr const char* kLastCheckpointFile = "last.pt";
inline constexpr const char* kBestCheckpointFile = "best.pt";

// 1: records of kdseg before the version key (the keys they lack take their defaults).
// 2: "version" added; log, validation and checkpoint cadence, --stop-after and
//    --skip-nonfinite recorded.
// 3: "data" is the store's absolute path (before: as typed, relative to a working folder no
//    longer known) and "data_hash" its content hash, which identifies it wherever it is.
inline constexpr int kRunRecordVersion = 3;

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

// Every setting of a training run that its record keeps.
struct RunConfig {
  std::string data;                // prepared store, an absolute path (as typed in records before version 3)
  std::string data_hash;           // its content_hash attribute (empty in records before version 3)
  std::string output;              // folder: checkpoints, metrics.jsonl, config.json
  int fold = 0;                    // held out for validation; every other fold trains ...
  std::vector<int> exclude_folds;  // ... except these (e.g. the fold a teacher's temperature was fitted on)
  models::Encoder arch = models::Encoder::kResNet18d;
  double width = 1.0;  // channel multiplier (tests and quick runs)
  double dropout = 0.1;
  TaskSpec task;
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
  bool skip_nonfinite = false;
  bool deterministic = false;
  // CPU, or CUDA: one GPU per rank (the node-local rank's), collectives over NCCL, cuDNN
  // autotuning (off with `deterministic`) and batches in page-locked memory.
  c10::DeviceType device = c10::kCPU;
  // Weights, and so activations, channels-last (NHWC) or contiguous (NCHW); kAuto chooses the
  // faster on the device (core/models/unet.h, channels_last_is_faster). Recorded resolved.
  ChannelsLast channels_last = ChannelsLast::kAuto;
  Precision precision = Precision::kAuto;

  // Distillation (`kdseg distill`).
  TeacherMode teacher_mode = TeacherMode::kNone;
  std::string cache;         // cache folder (TeacherMode::kCache)
  std::string teacher;       // teacher file: its hash is checked against the cache; online: the teacher
  double temperature = 1.0;  // softmax temperature of the soft labels and the KL term
  DmlReduction dml_reduction = DmlReduction::kGlobal;
};

// Whether a field must keep its value when a run resumes.
enum class OnResume { kSame, kMayChange };

// One field of the record, as the table in run_record.cpp declares it.
struct RunField {
  const char* key;
  OnResume on_resume;
  const char* why;  // why the field may change on resume (empty for kSame)
  size_t offset;    // of the member in RunConfig, and its size: the test that no member
  size_t size;      // of RunConfig is left out of the table reads them
};
const std::vector<RunField>& run_fields();

// The record as JSON: "version" and every field of the table, enumerations by name.
nlohmann::json run_config_json(const RunConfig& config);
// Reads a record written by any version up to kRunRecordVersion; keys a version lacks take
// their defaults. Throws kdseg::Error naming `source` and the key when a value has the wrong
// type or name, or the record is of a later version.
RunConfig run_config_from_json(const nlohmann::json& record, const std::string& source);
RunConfig parse_run_config(const std::string& text, const std::string& source);  // JSON text

// A field whose value differs between two records.
struct RunDifference {
  std::string key;
  std::string was, now;  // as JSON
  OnResume on_resume;
};
// Every field of the table whose values differ, in the table's order.
std::vector<RunDifference> run_differences(const RunConfig& was, const RunConfig& now);

// metrics.jsonl: one line per logged optimiser step ...
struct StepLine {
  int64_t step = 0;  // optimiser steps done
  int64_t epoch = 0;
  double loss = 0;                                    // the global-batch loss
  double ce = 0, kl = 0, dml_hard = 0, dml_soft = 0;  // its weighted terms
  double lr = 0;                                      // the encoder's learning rate of the step
  double images_per_s = 0, step_s = 0, data_wait_s = 0, teacher_s = 0;
  std::optional<double> grad_norm;  // before clipping, when --clip-grad is on
};
// ... and one per validation of the held-out fold.
struct ValidationLine {
  struct Case {
    std::string id;
    double dice = 0, ece = 0;
  };
  int64_t step = 0;
  int64_t epoch = 0;
  double mean_dice = 0, mean_ece = 0;
  std::vector<Case> cases;  // those whose Dice is defined
};
nlohmann::json metrics_line_json(const StepLine& line);
nlohmann::json metrics_line_json(const ValidationLine& line);

// A line of metrics.jsonl as read back: one of the two, or neither for a line that is not a
// record (a torn last line, an empty line).
struct MetricsLine {
  std::optional<StepLine> step;
  std::optional<ValidationLine> validation;
  // The line's step, of whichever kind; nullopt when it is neither.
  std::optional<int64_t> at_step() const;
};
// Throws kdseg::Error naming `source` and `line_number` when a line parses as JSON but a field
// has the wrong type; a line that is not JSON at all gives an empty MetricsLine.
MetricsLine parse_metrics_line(const std::string& text, const std::string& source, int64_t line_number);

}  // namespace kdseg

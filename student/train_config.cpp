#include "student/train_config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace kdseg::student {

bool is_rater_kind(LabelKind kind) { return kind != LabelKind::kHard && kind != LabelKind::kSmoothed; }
bool is_soft_rater_kind(LabelKind kind) { return kind == LabelKind::kMean || kind == LabelKind::kWeighted; }

namespace {

constexpr int64_t kMinCrop = 32;

void check_schedule(const TrainConfig& c, int world) {
  KDSEG_CHECK(c.epochs >= 0 && c.max_steps >= 0, "train: --epochs and --max-steps must be >= 0");
  KDSEG_CHECK((c.epochs > 0) != (c.max_steps > 0), "train: give exactly one of --epochs and --max-steps");
  KDSEG_CHECK(c.batch_size >= 1, "train: --batch-size must be >= 1, got ", c.batch_size);
  KDSEG_CHECK(c.accumulate >= 1 && c.batch_size % c.accumulate == 0, "train: --batch-size ", c.batch_size,
              " must be a multiple of --accumulate ", c.accumulate);
  KDSEG_CHECK((c.batch_size / c.accumulate) % world == 0, "train: the micro-batch ", c.batch_size / c.accumulate,
              " (--batch-size / --accumulate) must be a multiple of the number of ranks (", world, ")");
  KDSEG_CHECK(c.crop >= 1, "train: --crop-size must be >= 1, got ", c.crop);
  KDSEG_CHECK(c.crop >= kMinCrop, "train: --crop-size ", c.crop, " is below ", kMinCrop,
              ", the network's downsampling (its deepest feature is 1/32 of the crop); use ", kMinCrop, " or more");
  KDSEG_CHECK(c.workers >= 0, "train: --workers must be >= 0, got ", c.workers);
  KDSEG_CHECK(c.log_every >= 1, "train: --log-every must be >= 1, got ", c.log_every);
  KDSEG_CHECK(c.validate_every >= 0 && c.checkpoint_every >= 0 && c.stop_after >= 0,
              "train: --validate-every, --checkpoint-every and --stop-after must be >= 0 (0: off)");
}

void check_optimisation(const TrainConfig& c) {
  KDSEG_CHECK(c.dropout >= 0 && c.dropout < 1, "train: --dropout must be in [0, 1), got ", c.dropout);
  KDSEG_CHECK(c.weight_decay >= 0 && c.clip_grad >= 0, "train: --weight-decay and --clip-grad must be >= 0");
  KDSEG_CHECK(c.ls_epsilon >= 0 && c.ls_epsilon <= 1, "train: --ls-epsilon must be in [0, 1], got ", c.ls_epsilon);
  KDSEG_CHECK(c.ls_kernel >= 1 && c.ls_kernel % 2 == 1, "train: --ls-kernel must be odd and >= 1, got ", c.ls_kernel);
  KDSEG_CHECK(c.lr > 0, "train: --lr must be > 0, got ", c.lr);
  KDSEG_CHECK(c.warmup >= 0 && c.warmup < 1, "train: the warmup fraction must be in [0, 1), got ", c.warmup);
}

void check_distillation(const TrainConfig& c) {
  KDSEG_CHECK(c.teacher_mode != TeacherMode::kCache || !c.cache.empty(),
              "distill: --cache is required (or --teacher-mode online)");
  KDSEG_CHECK(c.teacher_mode != TeacherMode::kOnline || c.online_teacher,
              "distill: --teacher-mode online needs --teacher");
  KDSEG_CHECK(c.teacher_mode == TeacherMode::kNone || c.labels != LabelKind::kSmoothed,
              "distill: soft labels come from the teacher (or the raters); --labels ls is for train");
  KDSEG_CHECK(c.temperature > 0, "distill: --temperature must be > 0");
}

}  // namespace

void check_config(const TrainConfig& c, int world) {
  KDSEG_CHECK(!c.data.empty() && !c.output.empty(), "train: --data and --output are required");
  check_schedule(c, world);
  check_optimisation(c);
  check_distillation(c);
  KDSEG_CHECK(c.device == c10::kCPU || c.device == c10::kCUDA, "train: --device must be cpu or cuda, got '",
              c10::DeviceTypeName(c.device, /*lower_case=*/true), "'");
  KDSEG_CHECK(c.precision != Precision::kBf16 || c.device == c10::kCUDA,
              "train: --precision bf16 (autocast) is for --device cuda");
}

nlohmann::json config_json(const TrainConfig& c) {
  return {
      {"data", c.data},
      {"output", c.output},
      {"fold", c.fold},
      {"exclude_folds", c.exclude_folds},
      {"arch", enum_name(c.arch)},
      {"width", c.width},
      {"dropout", c.dropout},
      {"task", data::task_name(c.task)},
      {"labels", enum_name(c.labels)},
      {"ls_epsilon", c.ls_epsilon},
      {"ls_kernel", c.ls_kernel},
      {"loss", enum_name(c.loss)},
      {"epochs", c.epochs},
      {"max_steps", c.max_steps},
      {"batch_size", c.batch_size},
      {"accumulate", c.accumulate},
      {"crop", c.crop},
      {"lr", c.lr},
      {"weight_decay", c.weight_decay},
      {"warmup", c.warmup},
      {"clip_grad", c.clip_grad},
      {"seed", c.seed},
      {"workers", c.workers},
      {"deterministic", c.deterministic},
      {"teacher_mode", enum_name(c.teacher_mode)},
      {"cache", c.cache},
      {"teacher", c.teacher},
      {"temperature", c.temperature},
      {"dml_reduction", enum_name(c.dml_reduction)},
      {"device", enum_name(c.device)},
      {"precision", enum_name(c.precision)},
      {"channels_last", c.channels_last == ChannelsLast::kAuto ? nlohmann::json("auto")
                                                               : nlohmann::json(c.channels_last == ChannelsLast::kOn)}};
}

}  // namespace kdseg::student

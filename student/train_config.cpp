#include "student/train_config.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/error.h"

namespace kdseg::student {

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

// Activations kept for the backward pass per input pixel at width 1, counted from the network
// (core/models/unet.h): each conv3x3-BN-ReLU keeps three tensors, the decoder's full-resolution
// block alone 16 channels x 6 plus its upsampled and concatenated inputs, the stem 128 channels
// at 1/4 of the pixels, and so on down the encoder, about 500 floats for ResNet18d. Half of that
// is taken, so that the check refuses only crops that certainly cannot fit (the gradients of the
// backward pass, the optimiser and the loader come on top).
double floats_per_pixel(models::Encoder arch) {
  switch (arch) {
    case models::Encoder::kResNet18d: return 256;
    case models::Encoder::kResNet34d: return 320;
    case models::Encoder::kResNet50d: return 512;
  }
  return 256;
}

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

double machine_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0;
}

}  // namespace

double activation_bytes(const TrainConfig& c, int world) {
  const double crops = std::ceil(static_cast<double>(c.batch_size / std::max<int64_t>(c.accumulate, 1)) /
                                 static_cast<double>(std::max(world, 1)));
  const double pixels = static_cast<double>(c.crop) * static_cast<double>(c.crop);
  // The input, one channel per pixel, and the network's activations, whose channels scale with width.
  return crops * pixels * sizeof(float) * (1.0 + floats_per_pixel(c.arch) * c.width);
}

void check_fits_in_memory(const TrainConfig& c, int world, double memory_bytes) {
  const double needed = activation_bytes(c, world);
  if (memory_bytes <= 0 || needed <= memory_bytes) return;
  // The largest crop (a multiple of 32, as the network needs) whose estimate fits.
  const int64_t largest =
      static_cast<int64_t>(std::sqrt(memory_bytes / needed) * static_cast<double>(c.crop)) / kMinCrop * kMinCrop;
  KDSEG_THROW("train: --crop-size ", c.crop, " needs at least ", gib(needed), " per rank for the activations of ",
              c.batch_size / c.accumulate / std::max(world, 1), " crop(s) of ", c.crop, "x", c.crop, " (",
              enum_name(c.arch), ", width ", c.width, "), more than this machine's ", gib(memory_bytes),
              "; use --crop-size ", std::max<int64_t>(largest, kMinCrop),
              " or less (crops larger than the slices only pad them), or a smaller --batch-size or more --accumulate");
}

void check_config(const TrainConfig& c, int world) {
  KDSEG_CHECK(!c.data.empty() && !c.output.empty(), "train: --data and --output are required");
  check_schedule(c, world);
  check_optimisation(c);
  check_distillation(c);
  KDSEG_CHECK(c.device == c10::kCPU || c.device == c10::kCUDA, "train: --device must be cpu or cuda, got '",
              c10::DeviceTypeName(c.device, /*lower_case=*/true), "'");
  KDSEG_CHECK(c.precision != Precision::kBf16 || c.device == c10::kCUDA,
              "train: --precision bf16 (autocast) is for --device cuda");
  // The machine's memory: a CPU run's bound, and on CUDA an upper one (this build cannot ask
  // the device; the allocator then names the device's own limit).
  check_fits_in_memory(c, world, machine_memory_bytes());
}

}  // namespace kdseg::student

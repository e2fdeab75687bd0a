#include "student/trainer.h"

#include <torch/torch.h>

#include <c10/core/DeviceGuard.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/adamw.h"
#include "core/autocast.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/folder_lock.h"
#include "core/frozen_model.h"
#include "core/log.h"
#include "core/losses/distill.h"
#include "core/metrics.h"
#include "core/models/checkpoint.h"
#include "core/models/unet.h"
#include "core/progress.h"
#include "core/random.h"
#include "core/stop_request.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "data/preprocessing.h"
#include "data/soft_label_cache.h"
#include "dist/autograd_collectives.h"
#include "dist/data_parallel.h"
#include "dist/sync_batch_norm.h"
#include "student/metrics_log.h"

namespace kdseg::student {
namespace {
namespace fs = std::filesystem;
using torch::Tensor;
using Clock = std::chrono::steady_clock;
constexpr uint64_t kDropoutStream = 0x64726f706f7574;  // "dropout"

losses::ObjectiveWeights weights_for(LossKind loss, double temperature) {
  auto weights = losses::ObjectiveWeights().temperature(temperature);
  switch (loss) {
    case LossKind::kCe: return weights.ce(1.0).dml(0.0);
    case LossKind::kDml: return weights.ce(0.0).dml(1.0);
    case LossKind::kCeDml: break;
  }
  return weights;  // the paper: 0.25 CE/KL + 0.75 DML, label and teacher 0.5 each
}

data::RaterLabels rater_labels(LabelKind kind) {
  switch (kind) {
    case LabelKind::kMajority: return data::RaterLabels::kMajority;
    case LabelKind::kRandom: return data::RaterLabels::kRandom;
    case LabelKind::kMean: return data::RaterLabels::kMean;
    case LabelKind::kWeighted: return data::RaterLabels::kWeighted;
    case LabelKind::kHard:
    case LabelKind::kSmoothed: break;
  }
  return data::RaterLabels::kNone;
}

class Trainer {
 public:
  Trainer(const TrainConfig& c, dist::Communicator& comm)
      : c_(c), comm_(comm), store_(c.data), metrics_log_(c.output + "/" + kRunMetricsFile) {
    check_config(c_, comm_.size());
    // The record names the store wherever it is read from: its absolute path, and its content
    // hash for when that path is gone or names another store (evaluate's held-out check).
    c_.data = fs::absolute(c_.data).lexically_normal().string();
    c_.data_hash = store_.attribute(data::store::kContentHashAttribute);
    device_ = training_device(c_, comm_);
    bf16_ = uses_bf16_autocast(c_.precision, device_);
    configure_device();
    choose_layout();
    task_ = data::make_task(c_.task, parse_enum<data::Layout>(c_.data + ": layout", store_.attribute("layout")));
    preprocessing_ = data::preprocessing_json(data::preprocessing_of_store(store_, c_.data, c_.task));
    KDSEG_CHECK(!is_rater_kind(c_.labels) || store_.raters() > 0, c_.data, ": --labels ", enum_name(c_.labels),
                " learns from several raters, but the store keeps none (prepare a multi-rater dataset, such as ",
                "KiTS23 with its instances/, or use --labels hard)");
    split_rows();
    if (c_.teacher_mode == TeacherMode::kCache) open_cache();
    if (c_.teacher_mode == TeacherMode::kOnline) {
      KDSEG_CHECK(c_.online_teacher->classes() == task_.classes, c_.teacher, ": the teacher predicts ",
                  c_.online_teacher->classes(), " classes but task '", task_.name, "' has ", task_.classes);
    }
    plan_steps();
    build_model();
    if (decide_resume()) load_checkpoint();
    else if (c_.resume && comm_.rank() == 0) log::info("--resume: no {} yet, starting from step 0", checkpoint_path());
    // Lines logged after the checkpoint (by a run that stopped before its next one) are logged
    // again by this run: drop them.
    if (comm_.rank() == 0) metrics_log_.truncate_after(step_);
  }

  TrainSummary run() {
    if (comm_.rank() == 0 && step_ == 0) {
      write_file_atomic(c_.output + "/" + kRunConfigFile, run_config_json(c_).dump(2) + "\n");
      log::info(
          "training {} on fold {} of {}: {} training and {} validation slices, {} steps of global batch {} on {} "
          "rank(s), {}{}",
          enum_name(c_.arch), c_.fold, c_.data, train_rows_.size(), val_rows_.size(), total_steps_, c_.batch_size,
          comm_.size(), device_.str(), bf16_ ? " (bf16 autocast)" : "");
      log::info("weights and activations {}{}", channels_last_ ? "channels-last (NHWC)" : "contiguous (NCHW)",
                chose_layout_ ? ", the faster layout on this device" : "");
    }
    Progress progress("train", total_steps_, comm_.rank() == 0);
    progress.resume_at(step_);
    const int64_t first_step = step_;
    stop_at_ = c_.stop_after > 0 ? std::min(total_steps_, step_ + c_.stop_after) : total_steps_;
    while (step_ < stop_at_ && !stopped_) {
      run_epoch(progress);
    }
    progress.finish();
    if (stopped_ && step_ < total_steps_) {
      summary_.stopped_by = stop_requested() ? stop_signal_name() : "a stop signal to another rank";
      if (comm_.rank() == 0) {
        log::warn("{} received: stopped after step {} of {}; {} holds it, continue with --resume", summary_.stopped_by,
                  step_, total_steps_, checkpoint_path());
      }
    }
    summary_.steps = step_;
    summary_.steps_this_run = step_ - first_step;
    summary_.best_dice = best_dice_;
    return summary_;
  }

 private:
  void configure_device() {
    if (device_.is_cuda()) {
      device_guard_.reset_device(device_);
      // cuBLAS is deterministic only with a fixed workspace; it reads this before its first handle.
      if (c_.deterministic) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
      at::globalContext().setBenchmarkCuDNN(!c_.deterministic);
      at::globalContext().setDeterministicCuDNN(c_.deterministic);
      // fp32 means IEEE float32: no TF32 tensor cores in the convolutions (cuBLAS has them off).
      if (c_.precision == Precision::kFp32) at::globalContext().setAllowTF32CuDNN(false);
    }
    // Deterministic mode: on CPU, kernels without a deterministic implementation become errors.
    // On CUDA the backward of bilinear upsampling (every decoder stage) has none, so there it
    // only warns: runs repeat to rounding, not bit for bit.
    at::globalContext().setDeterministicAlgorithms(c_.deterministic, /*warn_only=*/device_.is_cuda());
    if (c_.deterministic && device_.is_cuda() && comm_.rank() == 0) {
      log::warn(
          "--deterministic on CUDA: cuDNN is deterministic and autotuning is off, but bilinear upsampling's "
          "backward accumulates with atomics; runs agree to rounding, not bit for bit");
    }
  }

  // The layout this run uses; with kAuto, channels-last only when every rank's device favours it
  // (one choice for all ranks, even on a cluster of mixed CPUs). Recorded resolved in config.json
  // and checkpoints.
  void choose_layout() {
    if (c_.channels_last == ChannelsLast::kAuto) {
      at::Tensor favoured = torch::full({1}, models::channels_last_is_faster(device_) ? 1 : 0, torch::kInt);
      dist::all_reduce_any_device(comm_, favoured, dist::ReduceOp::kMin);
      chose_layout_ = true;
      c_.channels_last = favoured.item<int>() != 0 ? ChannelsLast::kOn : ChannelsLast::kOff;
    }
    channels_last_ = c_.channels_last == ChannelsLast::kOn;
  }

  void plan_steps() {
    KDSEG_CHECK(c_.batch_size <= static_cast<int64_t>(train_rows_.size()), c_.data, ": --batch-size ", c_.batch_size,
                " is larger than the ", train_rows_.size(), " training slices outside fold ", c_.fold,
                "; lower --batch-size");
    sampler_ = std::make_unique<data::DistributedSampler>(train_rows_, comm_.rank(), comm_.size(),
                                                          c_.batch_size / c_.accumulate, c_.seed);
    KDSEG_CHECK(sampler_->steps_per_epoch() >= c_.accumulate, c_.data, ": ", train_rows_.size(),
                " training slices make ", sampler_->steps_per_epoch(), " micro-batch(es) of ",
                c_.batch_size / c_.accumulate, ", fewer than --accumulate ", c_.accumulate,
                "; lower --accumulate or --batch-size");
    steps_per_epoch_ = sampler_->steps_per_epoch() / c_.accumulate;
    total_steps_ = c_.max_steps > 0 ? c_.max_steps : c_.epochs * steps_per_epoch_;
    warmup_steps_ =
        std::max<int64_t>(1, static_cast<int64_t>(std::ceil(c_.warmup * static_cast<double>(total_steps_))));
  }

  // Rank 0 decides whether there is a run to resume and tells the others, so that every rank
  // starts from the same step (a rank that cannot read the checkpoint then fails, naming it).
  bool decide_resume() {
    at::Tensor resuming = torch::zeros({1}, torch::kInt);
    if (comm_.rank() == 0) {
      // Held until the trainer ends: a second run on this folder is refused, naming this one.
      output_lock_ = std::make_unique<FolderLock>(
          c_.output, c_.teacher_mode == TeacherMode::kNone ? "kdseg train" : "kdseg distill");
      const bool has_run = fs::exists(checkpoint_path());
      KDSEG_CHECK(c_.resume || c_.force || !has_run, c_.output, " already holds a run (", checkpoint_path(),
                  "); pass --resume to continue it, --force to start over, or choose another --output");
      resuming[0] = has_run && c_.resume ? 1 : 0;
    }
    dist::all_reduce_any_device(comm_, resuming, dist::ReduceOp::kMax);
    return resuming[0].item<int>() != 0;
  }

  void split_rows() {
    const int folds = store_.folds();
    KDSEG_CHECK(c_.fold >= 0 && c_.fold < folds, c_.data, ": --fold ", c_.fold, " does not exist; the store has ",
                folds, " folds (0-", folds - 1, ")");
    // A fold that does not exist excludes nothing: most likely a store of fewer folds than meant.
    for (const int f : c_.exclude_folds) {
      KDSEG_CHECK(f >= 0 && f < folds, c_.data, ": --exclude-folds ", f, " does not exist; the store has ", folds,
                  " folds (0-", folds - 1, ")");
    }
    val_rows_ = store_.rows_in_folds({c_.fold});
    for (int f = 0; f < folds; ++f) {
      const auto& excluded = c_.exclude_folds;
      if (f == c_.fold || std::find(excluded.begin(), excluded.end(), f) != excluded.end()) continue;
      const auto rows = store_.rows_in_folds({f});
      train_rows_.insert(train_rows_.end(), rows.begin(), rows.end());
    }
    std::sort(train_rows_.begin(), train_rows_.end());
    KDSEG_CHECK(!train_rows_.empty(), c_.data, ": no training slices outside fold ", c_.fold,
                c_.exclude_folds.empty() ? "" : " and the excluded folds");
  }

  // The cache must come from this store (and this teacher, when given), hold the task's classes
  // at the store's slice size, and cover every training slice.
  void open_cache() {
    soft_labels_ = std::make_shared<data::SoftLabelCache>(c_.cache);
    data::CacheUse use;
    use.store_path = c_.data;
    use.teacher_path = c_.teacher;
    use.task_name = task_.name;
    use.classes = task_.classes;
    use.temperature = c_.temperature;
    use.fold = c_.fold;
    data::check_cache_for_training(*soft_labels_, store_, train_rows_, use);
  }

  void build_model() {
    torch::manual_seed(c_.seed);  // the same initial weights on every rank (DataParallel also broadcasts)
    auto options = models::UNetOptions().encoder(c_.arch).classes(task_.classes).width(c_.width).dropout(c_.dropout);
    if (comm_.size() > 1) {
      dist::Communicator* comm = &comm_;
      options.norm([comm](int64_t channels) { return torch::nn::AnyModule(dist::SyncBatchNorm2d(channels, comm)); });
    }
    model_ = models::UNet(options);
    model_->to(device_);
    if (channels_last_) models::use_channels_last(*model_);
    // No weight decay on biases and normalisation weights (the 1-d parameters); 10x learning
    // rate for the decoder and heads.
    optimizer_ = std::make_unique<MultiTensorAdamW>(unet_param_groups(*model_, c_.lr, c_.weight_decay),
                                                    torch::optim::AdamWOptions(c_.lr));
    if (comm_.size() > 1) ddp_ = std::make_unique<dist::DataParallel>(model_.ptr(), comm_);
    const losses::DmlOptions dml;
    // Local reduction: each rank's loss on its own share, as the reference implementation does.
    const losses::GlobalBatch global =
        c_.dml_reduction == DmlReduction::kLocal ? losses::GlobalBatch{} : dist::global_batch(comm_, dml);
    objective_ = std::make_unique<losses::SegmentationObjective>(weights_for(c_.loss, c_.temperature), dml,
                                                                 task_.ignore_index, global);
  }

  double base_lr(int group) const { return unet_group_lr(group, c_.lr); }

  // The network under bf16 autocast when on; the objective and the metrics take float32 logits.
  models::UNetOutput forward(const Tensor& images) {
    models::UNetOutput out;
    {
      CudaAutocast autocast(bf16_);
      out = model_(images);
    }
    out.logits = out.logits.to(torch::kFloat);
    if (out.aux.defined()) out.aux = out.aux.to(torch::kFloat);
    return out;
  }

  // Linear warmup over warmup_steps_, then linear decay to 0 at total_steps_.
  double lr_factor(int64_t step) const {
    if (step < warmup_steps_) return static_cast<double>(step + 1) / static_cast<double>(warmup_steps_);
    return std::max(0.0, static_cast<double>(total_steps_ - step) /
                             static_cast<double>(std::max<int64_t>(1, total_steps_ - warmup_steps_)));
  }

  void run_epoch(Progress& progress) {
    const int64_t epoch = step_ / steps_per_epoch_;
    const int64_t done_in_epoch = step_ - epoch * steps_per_epoch_;
    auto batches = sampler_->batches(epoch);
    batches.resize(static_cast<size_t>(steps_per_epoch_ * c_.accumulate));
    batches.erase(batches.begin(), batches.begin() + done_in_epoch * c_.accumulate);
    data::LoaderOptions lo;
    lo.workers = c_.workers;
    lo.augment.crop = c_.crop;
    lo.soft_labels = soft_labels_;
    lo.temperature = c_.temperature;
    lo.raters = rater_labels(c_.labels);
    lo.pin_memory = device_.is_cuda();
    data::BatchLoader loader(c_.data, task_, lo, batches);
    model_->train();
    for (int64_t s = done_in_epoch; s < steps_per_epoch_ && step_ < stop_at_ && !stopped_; ++s) {
      train_step(loader, epoch);
      progress.advance(1, "loss " + std::to_string(summary_.last_loss).substr(0, 6));
      // The epoch's last step is saved below, after its validation.
      const bool last_of_epoch = s + 1 == steps_per_epoch_;
      if (c_.checkpoint_every > 0 && step_ % c_.checkpoint_every == 0 && !last_of_epoch && !stopped_) {
        save_checkpoint(kLastCheckpointFile);
      }
    }
    const bool epoch_done = step_ == (epoch + 1) * steps_per_epoch_;
    if (epoch_done && c_.validate_every > 0 && (epoch + 1) % c_.validate_every == 0 && !val_rows_.empty()) {
      validate_fold(epoch);
    }
    save_checkpoint(kLastCheckpointFile);
  }

  // What one optimiser step accumulates over its micro-batches.
  struct StepRecord {
    losses::LossTerms parts;  // of the last micro-batch
    Tensor loss_sum;          // float64 on the device
    double teacher_seconds = 0;
    int64_t images = 0;
  };

  // One optimiser step: `accumulate` micro-batches forward and backward, one reduction of the
  // loss and its finiteness, then the update, or a skip.
  void train_step(data::BatchLoader& loader, int64_t epoch) {
    const auto start = Clock::now();
    const double wait_before = loader.wait_seconds();
    set_learning_rates();
    optimizer_->zero_grad();
    // Dropout draws from (seed, step, rank): masks differ across ranks and steps, and a resumed
    // run draws the same ones without carrying generator states (CPU and CUDA are both seeded).
    torch::manual_seed(
        derive_seed(c_.seed, {kDropoutStream, static_cast<uint64_t>(step_), static_cast<uint64_t>(comm_.rank())}));
    StepRecord record;
    record.loss_sum = torch::zeros({}, torch::TensorOptions(torch::kDouble).device(device_));
    for (int64_t micro = 0; micro < c_.accumulate; ++micro) micro_step(loader, micro, record);
    const Tensor reduced = reduce_loss_and_flags(record.loss_sum);
    // A stop asked of any rank stops every rank after this same step.
    stopped_ = reduced[2].item<double>() != 0;
    if (reduced[1].item<double>() != 0) {
      KDSEG_CHECK(c_.skip_nonfinite, "train: the loss is not finite at step ", step_,
                  " (lower --lr, check the data, or pass --skip-nonfinite to skip such steps)");
      ++summary_.skipped_steps;
      if (ddp_) ddp_->synchronize_gradients();  // completes the step's collectives ...
      optimizer_->zero_grad();                  // ... whose non-finite results are dropped
      ++step_;
      return;
    }
    if (ddp_) ddp_->synchronize_gradients();
    // The norm stays on the device; it is read only on logged steps.
    const Tensor grad_norm = c_.clip_grad > 0 ? clip_grad_norm(model_->parameters(), c_.clip_grad) : Tensor();
    optimizer_->step();
    summary_.last_loss = reduced[0].item<double>() / static_cast<double>(comm_.size());
    ++step_;
    if (comm_.rank() == 0 && (step_ % std::max<int64_t>(1, c_.log_every) == 0 || step_ == total_steps_)) {
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      log_step(record, epoch, seconds, loader.wait_seconds() - wait_before, grad_norm);
    }
  }

  void set_learning_rates() {
    for (size_t g = 0; g < optimizer_->param_groups().size(); ++g) {
      static_cast<torch::optim::AdamWOptions&>(optimizer_->param_groups()[g].options())
          .lr(base_lr(static_cast<int>(g)) * lr_factor(step_));
    }
  }

  void micro_step(data::BatchLoader& loader, int64_t micro, StepRecord& record) {
    auto batch = loader.next();
    KDSEG_CHECK(batch.has_value(), "train: the loader ran out of batches at step ", step_);
    record.images += batch->images.size(0);
    check_labels(batch->labels);
    const Tensor input = batch->images.to(device_, /*non_blocking=*/true);
    const Tensor labels = batch->labels.to(device_, /*non_blocking=*/true);
    const auto out = forward(input);
    record.parts = (*objective_)(objective_inputs(*batch, out, input, labels, record));
    const Tensor loss = record.parts.total / static_cast<double>(c_.accumulate);
    if (ddp_ && micro + 1 < c_.accumulate) {
      auto guard = ddp_->no_sync();
      loss.backward();
    } else {
      loss.backward();
    }
    record.loss_sum += record.parts.total.detach().to(torch::kDouble);
  }

  // Hard labels (the store's, the raters' majority or one rater); or label-smoothed soft targets;
  // or the raters' mean as soft labels, with the teacher's soft targets when distilling; or hard
  // labels with the teacher's soft targets.
  losses::ObjectiveInputs objective_inputs(const data::Batch& batch, const models::UNetOutput& out, const Tensor& input,
                                           const Tensor& labels, StepRecord& record) {
    losses::ObjectiveInputs in;
    in.logits = out.logits;
    in.aux_logits = out.aux;
    in.labels = labels;
    in.labels_checked = true;
    if (is_soft_rater_kind(c_.labels)) {  // the objective mixes them with the teacher's, if any
      in.labels = Tensor();
      in.keep = labels != task_.ignore_index;
      in.label_soft = batch.rater_soft.to(device_, /*non_blocking=*/true);
      if (c_.teacher_mode == TeacherMode::kOnline) in.soft = online_soft_labels(input, record.teacher_seconds);
      if (c_.teacher_mode == TeacherMode::kCache) in.soft = batch.soft.to(device_, /*non_blocking=*/true);
    } else if (c_.labels == LabelKind::kSmoothed) {
      const auto smoothed = losses::boundary_label_smoothing(labels, task_.classes, c_.ls_epsilon, c_.ls_kernel,
                                                             task_.ignore_index, /*check_labels=*/false);
      in.labels = Tensor();
      in.soft = smoothed.soft;
      in.keep = smoothed.keep;
    } else if (c_.teacher_mode == TeacherMode::kOnline) {
      in.soft = online_soft_labels(input, record.teacher_seconds);
      in.keep = labels != task_.ignore_index;
    } else if (c_.teacher_mode == TeacherMode::kCache) {
      in.soft = batch.soft.to(device_, /*non_blocking=*/true);
      in.keep = labels != task_.ignore_index;
    }
    return in;
  }

  // The teacher's probabilities at the temperature, computed on the augmented batch.
  Tensor online_soft_labels(const Tensor& input, double& teacher_seconds) {
    const auto t0 = Clock::now();
    torch::NoGradGuard no_grad;
    Tensor teacher_logits;
    {
      CudaAutocast autocast(bf16_);
      teacher_logits = c_.online_teacher->logits(input);
    }
    Tensor soft = torch::softmax(teacher_logits.to(torch::kFloat) / c_.temperature, 1);
    if (device_.is_cuda()) torch::cuda::synchronize(device_.index());  // the teacher's time, not its launch
    teacher_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    return soft;
  }

  // One collective for all three, on the step's device: the global-batch loss (each rank's
  // share averaged over ranks, what one rank with the whole batch would report), the count of
  // ranks whose loss is not finite and the count of ranks asked to stop, so that every rank
  // decides the same way about skipping and stopping. Reading them back is the step's one host
  // synchronisation.
  Tensor reduce_loss_and_flags(const Tensor& loss_sum) {
    const Tensor finite = loss_sum.isfinite();
    const Tensor mean = loss_sum / static_cast<double>(c_.accumulate);
    const Tensor stop = torch::full({}, stop_requested() ? 1.0 : 0.0, mean.options());
    Tensor reduced = torch::stack(
        {torch::where(finite, mean, torch::zeros_like(mean)), finite.logical_not().to(torch::kDouble), stop});
    dist::all_reduce_any_device(comm_, reduced, dist::ReduceOp::kSum);
    return reduced.cpu();
  }

  void log_step(const StepRecord& record, int64_t epoch, double seconds, double data_wait, const Tensor& grad_norm) {
    const auto& parts = record.parts;
    StepLine line;
    line.step = step_;
    line.epoch = epoch;
    line.loss = summary_.last_loss;
    line.ce = parts.ce.item<double>();
    line.kl = parts.kl.item<double>();
    line.dml_hard = parts.dml_hard.item<double>();
    line.dml_soft = parts.dml_soft.item<double>();
    line.lr = c_.lr * lr_factor(step_ - 1);
    line.images_per_s = static_cast<double>(record.images * comm_.size()) / seconds;
    line.step_s = seconds;
    line.data_wait_s = data_wait;
    line.teacher_s = record.teacher_seconds;
    if (grad_norm.defined()) line.grad_norm = grad_norm.item<double>();  // before clipping
    metrics_log_.append(line);
  }

  // The batch's labels, still on the host, lie in [0, classes) or are the ignore label: checked
  // here so that the losses need not read the device back to check them.
  void check_labels(const Tensor& labels) const {
    const Tensor bad = (labels < 0).logical_or(labels >= task_.classes).logical_and(labels != task_.ignore_index);
    KDSEG_CHECK(!bad.any().item<bool>(), c_.data, ": a batch holds labels outside [0, ", task_.classes,
                ") that are not the ignore label ", task_.ignore_index, " (does --task fit the store?)");
  }

  void validate_fold(int64_t epoch) {
    torch::NoGradGuard no_grad;
    model_->eval();
    const std::vector<int64_t> rows = data::evaluation_rows(val_rows_, comm_.rank(), comm_.size());
    const auto plan = data::evaluation_plan(rows, 4);
    SegmentationMetrics metrics(static_cast<int64_t>(store_.case_ids().size()), task_.classes);
    data::LoaderOptions lo;
    lo.workers = c_.workers;
    lo.train = false;
    lo.augment.crop = 0;  // whole slices
    // Against the raters' majority where the store keeps raters, as evaluate measures.
    lo.raters = store_.raters() > 0 ? data::RaterLabels::kMajority : data::RaterLabels::kNone;
    lo.pin_memory = device_.is_cuda();
    data::BatchLoader loader(c_.data, task_, lo, plan);
    while (auto batch = loader.next()) {
      std::vector<int64_t> cases;
      for (int64_t r : batch->rows) cases.push_back(store_.slice_case()[static_cast<size_t>(r)]);
      const Tensor logits = forward(batch->images.to(device_, /*non_blocking=*/true)).logits;
      metrics.add(torch::softmax(logits, 1).cpu(), batch->labels, cases);
    }
    at::Tensor state = metrics.state();
    dist::all_reduce_any_device(comm_, state, dist::ReduceOp::kSum);  // every case counted once across ranks
    metrics.set_state(state);
    model_->train();
    const size_t target = metrics.regions().size() - 1;  // the tumour: the last class
    const double dice = metrics.mean_dice(target), ece = metrics.mean_ece();
    if (comm_.rank() == 0) {
      ValidationLine line{step_, epoch, dice, ece, {}};
      const auto dices = metrics.dice_per_case(target);
      const auto eces = metrics.ece_per_case();
      for (size_t k = 0; k < dices.size(); ++k) {
        if (!std::isnan(dices[k])) line.cases.push_back({store_.case_ids()[k], dices[k], eces[k]});
      }
      metrics_log_.append(line);
      log::info("validation after epoch {}: mean tumour Dice {:.4f}, ECE {:.4f}", epoch, dice, ece);
    }
    if (dice > best_dice_) {
      best_dice_ = dice;
      save_checkpoint(kBestCheckpointFile);
    }
  }

  void save_checkpoint(const std::string& name) {
    if (comm_.rank() != 0) return;
    models::CheckpointInfo info;
    info.config = run_config_json(c_).dump();
    info.classes = task_.classes;
    info.step = step_;
    info.best_dice = best_dice_;
    info.data_hash = store_.attribute(data::store::kContentHashAttribute);
    info.preprocessing = preprocessing_;
    models::save_checkpoint(c_.output + "/" + name, model_, *optimizer_, info);
  }

  std::string checkpoint_path() const { return c_.output + "/" + kLastCheckpointFile; }

  void load_checkpoint() {
    const models::Checkpoint checkpoint(checkpoint_path(), device_);  // a GPU run's resumes on CPU and back
    check_same_run(checkpoint);
    checkpoint.load_weights(model_);                         // the weights take the checkpoint's layout ...
    if (channels_last_) models::use_channels_last(*model_);  // ... and this run's again
    checkpoint.load_optimizer(*optimizer_);
    step_ = checkpoint.info().step;
    best_dice_ = checkpoint.info().best_dice;
    if (comm_.rank() == 0) log::info("resumed from {} at step {}", checkpoint.path(), step_);
  }

  // A resumed run must continue the same run: every setting that shapes it (core/run_record.h
  // says which), and the store.
  void check_same_run(const models::Checkpoint& checkpoint) const {
    RunConfig saved = parse_run_config(checkpoint.info().config, checkpoint.path());
    // Records before version 3 name the store by its path alone; the checkpoint's hash (checked
    // below) says which store it was.
    if (saved.data_hash.empty()) {
      saved.data_hash = checkpoint.info().data_hash.empty() ? c_.data_hash : checkpoint.info().data_hash;
    }
    std::string refused, changed;
    for (const RunDifference& d : run_differences(saved, c_)) {
      std::string& list = d.on_resume == OnResume::kSame ? refused : changed;
      list += (list.empty() ? "" : ", ") + d.key + " = " + d.was + " (this run has " + d.now + ")";
    }
    KDSEG_CHECK(refused.empty(), checkpoint.path(), ": was written with ", refused,
                "; resume with the same settings, or start a new run in another --output (or with --force)");
    if (!changed.empty() && comm_.rank() == 0) log::info("resuming with {}", changed);
    const std::string& data_hash = checkpoint.info().data_hash;  // absent from checkpoints of early versions
    KDSEG_CHECK(data_hash.empty() || data_hash == store_.attribute(data::store::kContentHashAttribute),
                checkpoint.path(), ": was trained on another version of ", c_.data,
                " (its content hash differs); resume on the same prepared store");
  }

  TrainConfig c_;
  dist::Communicator& comm_;
  c10::Device device_{c10::kCPU};
  c10::OptionalDeviceGuard device_guard_;  // this rank's GPU is the current device while training
  bool bf16_ = false;
  bool channels_last_ = true;  // the layout this run uses (TrainConfig::channels_last resolved)
  bool chose_layout_ = false;  // by the device (--channels-last auto)
  data::PreparedStore store_;
  MetricsLog metrics_log_;
  data::Task task_;
  std::string preprocessing_;  // JSON, in every checkpoint (data/preprocessing.h)
  std::shared_ptr<const data::SoftLabelCache> soft_labels_;
  std::vector<int64_t> train_rows_, val_rows_;
  std::unique_ptr<data::DistributedSampler> sampler_;
  int64_t steps_per_epoch_ = 1, total_steps_ = 0, warmup_steps_ = 1, step_ = 0, stop_at_ = 0;
  bool stopped_ = false;
  std::unique_ptr<FolderLock> output_lock_;  // rank 0's  // a stop signal was agreed on at the last step
  double best_dice_ = -1;
  models::UNet model_{nullptr};
  std::unique_ptr<MultiTensorAdamW> optimizer_;
  std::unique_ptr<dist::DataParallel> ddp_;
  std::unique_ptr<losses::SegmentationObjective> objective_;
  TrainSummary summary_;
};

}  // namespace

c10::Device training_device(const TrainConfig& c, const dist::Communicator& comm) {
  if (c.device != c10::kCUDA) return dist::rank_device(c.device, comm);
  KDSEG_CHECK(comm.backend() != dist::Backend::kMpi, "train: --backend mpi reduces CPU tensors; training on CUDA ",
              "reduces over NCCL (--backend nccl, or auto)");
  return dist::rank_device(c.device, comm);
}

TrainSummary train(const TrainConfig& config, dist::Communicator& comm) {
  Trainer trainer(config, comm);
  return trainer.run();
}

}  // namespace kdseg::student

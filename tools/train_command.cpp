// `kdseg train`.
#include "tools/train_command.h"

#include <iostream>

#include "core/device.h"
#include "core/error.h"
#include "core/stop_request.h"
#include "student/trainer.h"
#include "teacher/model_loader.h"
#include "tools/cli.h"
#include "tools/launch.h"

namespace kdseg::tools {
namespace po = boost::program_options;

namespace {

// distill's teachers (train's is TeacherMode::kNone), and its label terms (ls is train's).
constexpr std::initializer_list<student::TeacherMode> kDistillTeacherModes = {student::TeacherMode::kCache,
                                                                              student::TeacherMode::kOnline};
constexpr std::initializer_list<student::LabelKind> kDistillLabels = {
    student::LabelKind::kHard, student::LabelKind::kMajority, student::LabelKind::kRandom, student::LabelKind::kMean,
    student::LabelKind::kWeighted};

// The options `train` and `distill` share: the data, the network, the optimisation, the run.
void add_trainer_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("data", po::value<std::string>()->required(), "prepared store (kdseg prepare)")
      ("output", po::value<std::string>()->required(), "folder for checkpoints, metrics.jsonl and config.json")
      ("fold", po::value<int>()->default_value(0), "validation fold; the others train")
      ("exclude-folds", po::value<std::string>()->default_value(""),
       "folds kept out of training too, e.g. 1 (where a teacher's temperature was fitted)")
      ("arch", po::value<std::string>()->default_value("unet-resnet18d"), enum_help<models::Encoder>().c_str())
      ("width", po::value<double>()->default_value(1.0), "channel multiplier (1: the paper's network)")
      ("dropout", po::value<double>()->default_value(0.1), "dropout before the heads")
      ("task", po::value<std::string>()->default_value("tumor"), enum_help<data::TaskKind>().c_str())
      ("loss", po::value<std::string>()->default_value("ce+dml"), enum_help<student::LossKind>().c_str())
      ("epochs", po::value<int64_t>()->default_value(0), "epochs to train (or --max-steps)")
      ("max-steps", po::value<int64_t>()->default_value(0), "optimiser steps to train (or --epochs)")
      ("batch-size", po::value<int64_t>()->default_value(8), "global batch size across all ranks")
      ("accumulate", po::value<int64_t>()->default_value(1), "micro-batches per optimiser step")
      ("crop-size", po::value<int64_t>()->default_value(384), "training crop")
      ("lr", po::value<double>()->default_value(1e-4), "encoder learning rate (decoder and heads: 10x)")
      ("weight-decay", po::value<double>()->default_value(1e-2), "AdamW weight decay (not on biases and norms)")
      ("clip-grad", po::value<double>()->default_value(0), "max gradient norm (0: off)")
      ("seed", po::value<uint64_t>()->default_value(0), "seed of initialisation, sampling and augmentation")
      ("workers", po::value<int>()->default_value(2), "data loading threads per rank")
      ("log-every", po::value<int64_t>()->default_value(10), "steps between metrics.jsonl lines")
      ("validate-every", po::value<int64_t>()->default_value(1), "epochs between validations (0: never)")
      ("checkpoint-every", po::value<int64_t>()->default_value(0), "steps between checkpoints (0: each epoch)")
      ("resume", po::bool_switch(), "continue the run in OUTPUT from its last.pt (the same options again)")
      ("force", po::bool_switch(), "start over in an OUTPUT that holds a run, replacing it as this run goes")
      ("stop-after", po::value<int64_t>()->default_value(0), "stop after N steps of this run; --resume continues (0: run to the end)")
      ("skip-nonfinite", po::bool_switch(), "skip steps with a non-finite loss instead of stopping")
      ("deterministic", po::bool_switch(), "use deterministic kernels only (an error where none exists)")
      ("device", po::value<std::string>()->default_value("cpu"),
       (enum_help<c10::DeviceType>() + " (one GPU per rank: the node-local rank's)").c_str())
      ("precision", po::value<std::string>()->default_value("auto"), enum_help<Precision>().c_str())
      ("channels-last", po::value<std::string>()->default_value("auto"),
       ("weights and activations NHWC: " + enum_help<student::ChannelsLast>()).c_str());
  // clang-format on
}

student::TrainConfig trainer_config(const po::variables_map& vm) {
  student::TrainConfig c;
  c.data = vm["data"].as<std::string>();
  c.output = vm["output"].as<std::string>();
  c.fold = vm["fold"].as<int>();
  const std::string excluded = vm["exclude-folds"].as<std::string>();
  if (!excluded.empty()) c.exclude_folds = parse_folds(excluded);
  c.arch = parse_option<models::Encoder>(vm, "arch");
  c.width = vm["width"].as<double>();
  c.dropout = vm["dropout"].as<double>();
  c.task = parse_task_option(vm);
  c.loss = parse_option<student::LossKind>(vm, "loss");
  c.epochs = vm["epochs"].as<int64_t>();
  c.max_steps = vm["max-steps"].as<int64_t>();
  c.batch_size = vm["batch-size"].as<int64_t>();
  c.accumulate = vm["accumulate"].as<int64_t>();
  c.crop = vm["crop-size"].as<int64_t>();
  c.lr = vm["lr"].as<double>();
  c.weight_decay = vm["weight-decay"].as<double>();
  c.clip_grad = vm["clip-grad"].as<double>();
  c.seed = vm["seed"].as<uint64_t>();
  c.workers = vm["workers"].as<int>();
  c.log_every = vm["log-every"].as<int64_t>();
  c.validate_every = vm["validate-every"].as<int64_t>();
  c.checkpoint_every = vm["checkpoint-every"].as<int64_t>();
  c.resume = vm["resume"].as<bool>();
  c.force = vm["force"].as<bool>();
  if (c.resume && c.force) throw po::error("--resume continues the run in --output and --force replaces it: give one");
  c.stop_after = vm["stop-after"].as<int64_t>();
  c.skip_nonfinite = vm["skip-nonfinite"].as<bool>();
  c.deterministic = vm["deterministic"].as<bool>();
  c.device = parse_option<c10::DeviceType>(vm, "device");
  c.precision = parse_option<Precision>(vm, "precision");
  c.channels_last = parse_option<student::ChannelsLast>(vm, "channels-last");
  return c;
}

int train_with(const po::variables_map& vm, student::TrainConfig c) {
  return run_distributed(vm, /*cuda=*/c.device == c10::kCUDA, [&](dist::Communicator& comm) {
    install_stop_handlers();  // SIGTERM, SIGINT, SIGUSR1: stop after the step, with last.pt written
    if (c.teacher_mode == student::TeacherMode::kOnline) {
      // On the device the student trains on.
      c.online_teacher = teacher::load_model(c.teacher, student::training_device(c, comm));
    }
    const student::TrainSummary s = student::train(c, comm);
    if (comm.rank() == 0) {
      std::cout << "trained " << s.steps << " steps (" << s.skipped_steps << " skipped)";
      if (s.steps_this_run > 0) std::cout << ", last loss " << s.last_loss;
      else std::cout << ": already finished, nothing to do";
      if (s.best_dice >= 0) std::cout << ", best validation Dice " << s.best_dice;
      std::cout << "; checkpoints in " << c.output << "\n";
      if (!s.stopped_by.empty()) {
        std::cout << "stopped by " << s.stopped_by << "; continue with the same command and --resume\n";
      }
    }
    return s.stopped_by.empty() ? kExitOk : kExitStopped;
  });
}

}  // namespace

void add_train_options(po::options_description& d) {
  add_trainer_options(d);
  // clang-format off
  d.add_options()
      ("labels", po::value<std::string>()->default_value("hard"),
       (enum_help<student::LabelKind>() + " (all but hard and ls from several raters)").c_str())
      ("ls-epsilon", po::value<double>()->default_value(0.5), "label smoothing: weight moved off the true class")
      ("ls-kernel", po::value<int64_t>()->default_value(3), "label smoothing: boundary window size");
  // clang-format on
}

int run_train(const po::variables_map& vm) {
  student::TrainConfig c = trainer_config(vm);
  c.labels = parse_option<student::LabelKind>(vm, "labels");
  c.ls_epsilon = vm["ls-epsilon"].as<double>();
  c.ls_kernel = vm["ls-kernel"].as<int64_t>();
  return train_with(vm, c);
}

void add_distill_options(po::options_description& d) {
  add_trainer_options(d);
  // clang-format off
  d.add_options()
      ("cache", po::value<std::string>()->default_value(""), "soft-label cache folder (kdseg precompute)")
      ("labels", po::value<std::string>()->default_value("hard"),
       ("the label terms, mixed with the teacher's: " + enum_help(kDistillLabels) + " (all but hard from several raters)").c_str())
      ("teacher-mode", po::value<std::string>()->default_value("cache"), enum_help(kDistillTeacherModes).c_str())
      ("teacher", po::value<std::string>()->default_value(""),
       "teacher file: checked against the cache's provenance; with --teacher-mode online, the teacher")
      ("temperature", po::value<double>()->default_value(1.0), "softmax temperature of the soft labels and the KL term")
      ("dml-reduction", po::value<std::string>()->default_value("global"), enum_help<student::DmlReduction>().c_str());
  // clang-format on
}

int run_distill(const po::variables_map& vm) {
  student::TrainConfig c = trainer_config(vm);
  c.teacher_mode = parse_option(vm, "teacher-mode", kDistillTeacherModes);
  c.labels = parse_option<student::LabelKind>(vm, "labels");
  c.cache = vm["cache"].as<std::string>();
  c.teacher = vm["teacher"].as<std::string>();
  c.temperature = vm["temperature"].as<double>();
  c.dml_reduction = parse_option<student::DmlReduction>(vm, "dml-reduction");
  using student::TeacherMode;
  if (c.teacher_mode == TeacherMode::kCache && c.cache.empty()) {
    throw po::error("--cache is required with --teacher-mode cache");
  }
  if (c.teacher_mode == TeacherMode::kOnline && c.teacher.empty()) {
    throw po::error("--teacher is required with --teacher-mode online");
  }
  return train_with(vm, c);
}

}  // namespace kdseg::tools

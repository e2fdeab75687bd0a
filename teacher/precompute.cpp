#include "teacher/precompute.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/autocast.h"
#include "core/build_config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/folder_lock.h"
#include "core/frozen_model.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/progress.h"
#include "core/stop_request.h"
#include "data/cache_folder.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "teacher/calibration.h"
#include "teacher/model_loader.h"

namespace kdseg::teacher {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using ShardSpec = data::CacheShardWriter::ShardSpec;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string folds_text(const std::vector<int>& folds) {
  if (folds.empty()) return "all";
  std::vector<int> sorted = folds;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (int f : sorted) out += (out.empty() ? "" : ",") + std::to_string(f);
  return out;
}

// Test hook: KDSEG_TEST_KILL_AFTER_BATCHES="<rank or *>:<n>[:<signal>]" sends a real signal
// (KILL, the default, or TERM, INT, USR1) to that rank (or to every rank) once it has written n
// batches: resuming after a hard kill, stopping at a batch boundary after a polite one.
void maybe_kill_for_test(int rank, int64_t batches_written) {
  const char* spec = std::getenv("KDSEG_TEST_KILL_AFTER_BATCHES");
  if (spec == nullptr) return;
  std::stringstream in(spec);
  std::string who, count, name;
  std::getline(in, who, ':');
  std::getline(in, count, ':');
  std::getline(in, name, ':');
  const auto n = parse_integer(count);
  if (!n || (who != "*" && who != std::to_string(rank)) || batches_written != *n) return;
  const int signal = name == "TERM" ? SIGTERM : name == "INT" ? SIGINT : name == "USR1" ? SIGUSR1 : SIGKILL;
  std::raise(signal);
}

void check_options(const PrecomputeOptions& o) {
  KDSEG_CHECK(!o.teachers.empty() && !o.data.empty() && !o.output.empty(),
              "precompute: --teacher, --data and --output are required");
  KDSEG_CHECK(o.batch_size >= 1, "precompute: --batch-size must be >= 1");
  KDSEG_CHECK(o.compression >= 0 && o.compression <= 9, "precompute: --compression must be 0-9");
  KDSEG_CHECK(o.temperature >= 0, "precompute: --temperature must be > 0 (or 0: 1)");
  KDSEG_CHECK(o.format == data::CacheFormat::kProbsU8 || o.temperature == 0,
              "precompute: --temperature applies to probs-u8 caches; logits-f16 stores the ",
              "logits and distill applies its own --temperature");
  KDSEG_CHECK(!o.fit_temperature || !o.calibration_folds.empty(),
              "precompute: --temperature fit needs --calibration-folds (folds the students do not train on)");
  KDSEG_CHECK(o.fit_temperature || o.calibration_folds.empty(),
              "precompute: --calibration-folds is for --temperature fit");
  for (int fold : o.calibration_folds) {
    KDSEG_CHECK(!o.folds.empty() && std::find(o.folds.begin(), o.folds.end(), fold) == o.folds.end(),
                "precompute: calibration fold ", fold, " is also cached (--folds ", folds_text(o.folds),
                "): students would train on the cases the temperature was fitted on");
  }
}

// The teacher, or the ensemble of the teachers, with each file's hash: each checked by
// o.check_teacher and against the task's classes; the same file twice (by content) is refused, as it
// would weigh double.
struct Teachers {
  std::unique_ptr<FrozenModel> model;
  std::vector<std::string> hashes;  // in the order of o.teachers
};

Teachers load_teachers(const PrecomputeOptions& o, const data::Task& task, const data::PreparedStore& store,
                       c10::Device device) {
  std::vector<std::unique_ptr<FrozenModel>> members;
  std::vector<std::string> hashes;
  for (const std::string& file : o.teachers) {
    const std::string hash = hash_file(file);
    const auto same = std::find(hashes.begin(), hashes.end(), hash);
    KDSEG_CHECK(same == hashes.end(), file, ": the same teacher as ",
                o.teachers[static_cast<size_t>(same - hashes.begin())], " (file hash ", hash,
                "): an ensemble's teachers must differ");
    hashes.push_back(hash);
    members.push_back(load_model(file, device));
    KDSEG_CHECK(members.back()->classes() == task.classes, file, ": the teacher predicts ", members.back()->classes(),
                " classes but task '", task.name, "' has ", task.classes, " (pass the teacher's --task)");
    if (o.check_teacher) o.check_teacher(*members.back(), file, store);
  }
  return {make_ensemble(std::move(members), o.teachers), std::move(hashes)};
}

// The provenance's "calibration": "none", or the fitted T and where it was fitted.
std::string calibration_text(const PrecomputeOptions& o, double temperature) {
  if (!o.fit_temperature) return "none";
  std::ostringstream t;
  t.precision(17);
  t << "T = " << temperature << " fitted on folds " << folds_text(o.calibration_folds);
  return t.str();
}

// The temperature probs-u8 stores probabilities at (logits-f16 ignores it).
double pass_temperature(const PrecomputeOptions& o) { return o.temperature > 0 ? o.temperature : 1.0; }

data::CacheProvenance provenance_of(const PrecomputeOptions& o, const std::vector<std::string>& teacher_hashes,
                                    const data::PreparedStore& store, int64_t classes, double calibration) {
  data::CacheProvenance provenance;
  provenance.calibration = calibration_text(o, calibration);
  provenance.format = enum_name(o.format);
  if (o.format == data::CacheFormat::kProbsU8) {
    std::ostringstream t;
    t.precision(17);
    t << pass_temperature(o);
    provenance.temperature = t.str();
  } else {
    provenance.temperature = "applied when read";
  }
  // An ensemble's: the files joined by " + ", their hashes by "+", in the order given.
  for (size_t i = 0; i < o.teachers.size(); ++i) {
    const bool first = i == 0;
    provenance.teacher_file += (first ? "" : " + ") + fs::absolute(o.teachers[i]).string();
    provenance.teacher_hash += (first ? "" : "+") + teacher_hashes[i];
  }
  provenance.store_file = fs::absolute(o.data).string();
  provenance.store_hash = store.attribute(data::store::kContentHashAttribute);
  provenance.folds = folds_text(o.folds);
  provenance.classes = std::to_string(classes);
  provenance.tool_version = KDSEG_TOOL_VERSION;
  provenance.created = utc_now_iso8601();
  return provenance;
}

// This rank's shard: fixed batches of `rows` in store order, rank r taking the r-th contiguous
// block of them, so that a batch's composition does not depend on the number of ranks.
ShardSpec shard_spec(const PrecomputeOptions& o, const std::vector<int64_t>& rows, const data::PreparedStore& store,
                     int64_t classes, const dist::Communicator& comm) {
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t batches = (n + o.batch_size - 1) / o.batch_size;
  const int64_t first_batch = batches * comm.rank() / comm.size();
  const int64_t end_batch = batches * (comm.rank() + 1) / comm.size();
  const int64_t first_row = std::min(n, first_batch * o.batch_size), end_row = std::min(n, end_batch * o.batch_size);
  ShardSpec spec;
  spec.rank = comm.rank();
  spec.world = comm.size();
  spec.first_row = first_row;
  spec.store_rows.assign(rows.begin() + first_row, rows.begin() + end_row);
  spec.classes = classes;
  spec.height = store.height();
  spec.width = store.width();
  spec.format = o.format;
  spec.compression = o.compression;
  return spec;
}

// The shard's batches that still have a slice to compute, and the shard row each begins at.
struct PendingBatches {
  std::vector<std::vector<data::DistributedSampler::Item>> plan;
  std::vector<int64_t> first;
};

// The shard begins at a batch boundary, so its batches are the pass's.
PendingBatches pending_batches(const data::CacheShardWriter& shard, const ShardSpec& spec, int64_t batch_size) {
  PendingBatches pending;
  auto batches = data::evaluation_plan(spec.store_rows, batch_size);
  for (size_t b = 0; b < batches.size(); ++b) {
    const int64_t local = static_cast<int64_t>(b) * batch_size;
    bool all_done = true;
    for (size_t i = 0; i < batches[b].size(); ++i) all_done = all_done && shard.done(local + static_cast<int64_t>(i));
    if (all_done) continue;
    pending.plan.push_back(std::move(batches[b]));
    pending.first.push_back(local);
  }
  return pending;
}

// The teacher's outputs for `images` as the cache stores them, on the CPU: of the calibrated
// teacher (logits / calibration) when a temperature was fitted.
// Non-finite logits are refused, naming the first such slice of `rows`.
at::Tensor teacher_values(FrozenModel& teacher, const at::Tensor& images, const std::vector<int64_t>& rows,
                          const data::PreparedStore& store, c10::Device device, const PrecomputeOptions& o,
                          double calibration) {
  torch::NoGradGuard no_grad;
  CudaAutocast autocast(device.is_cuda());
  at::Tensor logits = teacher.logits(images.to(device)).to(torch::kFloat);
  check_finite_logits(logits, rows, store, o.data, teacher);
  if (calibration != 1) logits = logits / calibration;
  return data::encode_soft_labels(logits, o.format, pass_temperature(o)).to(torch::kCPU);
}

// Computes and writes this rank's pending batches, then finishes its shard.
void run_pass(const PrecomputeOptions& o, const data::Task& task, const data::PreparedStore& store,
              FrozenModel& teacher, c10::Device device, const PendingBatches& pending, data::CacheShardWriter& shard,
              int rank, PrecomputeSummary& summary) {
  const double calibration = summary.calibration_temperature;
  Progress progress("precompute", static_cast<int64_t>(pending.plan.size()), rank == 0);
  if (!pending.plan.empty()) {
    data::LoaderOptions lo;
    lo.workers = o.workers;
    lo.train = false;
    lo.augment.crop = 0;  // whole slices
    data::BatchLoader loader(o.data, task, lo, pending.plan);
    for (size_t b = 0; b < pending.plan.size(); ++b) {
      auto batch = loader.next();
      KDSEG_CHECK(batch.has_value(), "precompute: the loader ran out of batches");
      auto t0 = Clock::now();
      std::vector<int64_t> rows;
      for (const auto& item : pending.plan[b]) rows.push_back(item.row);
      const at::Tensor values = teacher_values(teacher, batch->images, rows, store, device, o, calibration);
      summary.teacher_seconds += seconds_since(t0);
      t0 = Clock::now();
      shard.write(pending.first[b], values);
      summary.write_seconds += seconds_since(t0);
      summary.computed += values.size(0);
      progress.advance(1);
      maybe_kill_for_test(rank, static_cast<int64_t>(b) + 1);
      if (stop_requested() && b + 1 < pending.plan.size()) {
        summary.stopped_by = stop_signal_name();  // the batch is written and flushed
        break;
      }
    }
    summary.wait_seconds = loader.wait_seconds();
  }
  if (!summary.stopped_by.empty()) return;
  shard.finish();
  progress.finish();
}

// Whether any rank was stopped by a signal; then every rank reports the stop (collective).
bool any_rank_stopped(dist::Communicator& comm, PrecomputeSummary& summary) {
  at::Tensor stopped = torch::full({1}, summary.stopped_by.empty() ? 0 : 1, torch::kInt);
  dist::all_reduce_any_device(comm, stopped, dist::ReduceOp::kMax);
  if (stopped.item<int>() == 0) return false;
  if (summary.stopped_by.empty()) summary.stopped_by = "a stop signal to another rank";
  return true;
}

// Once every rank's shard is finished: rank 0 writes the master; every rank learns the total
// number of slices computed.
void finish_pass(const data::CacheFolder& folder, dist::Communicator& comm, PrecomputeSummary& summary) {
  summary.master = folder.master_path();
  if (comm.rank() == 0) folder.finish_pass(comm.size());
  comm.barrier();
  at::Tensor computed = torch::full({1}, summary.computed, torch::kLong);
  dist::all_reduce_any_device(comm, computed, dist::ReduceOp::kSum);
  summary.computed = computed.item<int64_t>();
}

}  // namespace

PrecomputeSummary precompute(const PrecomputeOptions& o, dist::Communicator& comm) {
  const auto start = Clock::now();
  check_options(o);
  const c10::Device device = dist::rank_device(o.device, comm);

  // The slices: the selected folds' rows in store order.
  const data::PreparedStore store(o.data);
  const data::Task task =
      data::make_task(o.task, parse_enum<data::Layout>(o.data + ": layout", store.attribute("layout")));
  const std::vector<int64_t> rows = store.rows_in_folds(o.folds);
  KDSEG_CHECK(!rows.empty(), o.data, ": no slices in folds ", folds_text(o.folds));

  const Teachers teachers = load_teachers(o, task, store, device);
  FrozenModel& teacher = *teachers.model;

  const data::CacheFolder folder(o.output);
  const std::string work = folder.pass_dir();
  std::unique_ptr<FolderLock> lock;  // rank 0 holds the cache folder for the whole pass
  if (comm.rank() == 0) {
    lock = std::make_unique<FolderLock>(o.output, "kdseg precompute", "cache folder");
    folder.prepare_pass(comm.size(), o.force);
  }
  comm.barrier();

  const ShardSpec spec = shard_spec(o, rows, store, task.classes, comm);
  PrecomputeSummary summary;
  if (o.fit_temperature) {
    const TemperatureFit fit =
        fit_temperature(teacher, o.data, task, o.calibration_folds, device, o.workers, o.batch_size, comm);
    summary.calibration_temperature = fit.temperature;
    summary.nll_before = fit.nll_before;
    summary.nll_after = fit.nll_after;
    if (comm.rank() == 0) {
      log::info("calibration: T = {:.4g} on folds {} ({} voxels): NLL {:.5f} at T = 1, {:.5f} at T", fit.temperature,
                folds_text(o.calibration_folds), fit.voxels, fit.nll_before, fit.nll_after);
      if (fit.at_grid_end) {
        log::warn(
            "calibration: T = {:.4g} is the end of the searched range [0.1, 10]; the teacher is far from "
            "calibrated (train it longer?)",
            fit.temperature);
      }
    }
  }
  try {
    data::CacheShardWriter shard(
        work, spec, provenance_of(o, teachers.hashes, store, task.classes, summary.calibration_temperature));
    run_pass(o, task, store, teacher, device, pending_batches(shard, spec, o.batch_size), shard, comm.rank(), summary);
    // After a resume the ranks' remaining shares can differ by hours: no timeout on this wait.
    comm.wait_for_all();
    // A rank stopped by a signal left its shard unfinished, its written slices flagged: no
    // master this time, on any rank; a rerun computes the rest.
    if (any_rank_stopped(comm, summary)) return summary;
    finish_pass(folder, comm, summary);
  } catch (const IoError& e) {
    throw_write_failure(o.output, "the soft-label cache", e.message());
  }
  summary.slices = static_cast<int64_t>(rows.size());
  summary.seconds = seconds_since(start);
  return summary;
}

}  // namespace kdseg::teacher

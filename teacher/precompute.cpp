#include "teacher/precompute.h"

#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/autocast.h"
#include "core/build_config.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/progress.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "teacher/model_loader.h"

namespace kdseg::teacher {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string folds_text(const std::vector<int>& folds) {
  if (folds.empty()) return "all";
  std::vector<int> sorted = folds;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (int f : sorted) out += (out.empty() ? "" : ",") + std::to_string(f);
  return out;
}

// Test hook: KDSEG_TEST_KILL_AFTER_BATCHES="<rank or *>:<n>" sends SIGKILL to that rank (or to
// every rank) once it has written n batches, to test resuming after a hard kill.
void maybe_kill_for_test(int rank, int64_t batches_written) {
  const char* spec = std::getenv("KDSEG_TEST_KILL_AFTER_BATCHES");
  if (spec == nullptr) return;
  const std::string text(spec);
  const auto colon = text.find(':');
  if (colon == std::string::npos) return;
  const std::string who = text.substr(0, colon);
  if ((who == "*" || who == std::to_string(rank)) && batches_written == std::stoll(text.substr(colon + 1))) {
    std::raise(SIGKILL);
  }
}

bool is_shard(const fs::path& path) { return path.filename().string().rfind("shard-", 0) == 0; }

// A pass that replaces a finished cache (--force) writes its shards here and moves them into
// the cache folder only once they are complete: until then the old cache stays readable.
fs::path staging_folder(const fs::path& dir) { return dir / ".kdseg-replacement"; }

// Replaces the cache's shards with the staged ones. Crash-safe with the master removed first:
// a cache folder without a master is a pass to resume, which starts by finishing this.
void promote_staged(const fs::path& dir) {
  const fs::path staged = staging_folder(dir);
  fs::remove(dir / "soft_labels.h5");
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (is_shard(entry.path()) && !fs::exists(staged / entry.path().filename())) fs::remove(entry.path());
  }
  for (const auto& entry : fs::directory_iterator(staged)) fs::rename(entry.path(), dir / entry.path().filename());
  fs::remove(staged);
}

// The folder this pass writes its shards to: the cache folder, or its staging folder when a
// finished cache is being replaced.
fs::path prepare_output(const PrecomputeOptions& o, dist::Communicator& comm) {
  const fs::path dir(o.output);
  const fs::path master = dir / "soft_labels.h5";
  const bool replacing = fs::exists(master);
  const fs::path work = replacing ? staging_folder(dir) : dir;
  if (comm.rank() == 0) {
    KDSEG_CHECK(!replacing || o.force, master.string(), ": a finished cache is already there; it is never overwritten ",
                "without --force (or choose another --output)");
    if (!replacing && fs::is_directory(staging_folder(dir))) promote_staged(dir);  // an interrupted replacement
    std::error_code ec;
    fs::create_directories(work, ec);
    KDSEG_CHECK(!ec && fs::is_directory(work), o.output, ": cannot create the cache folder: ",
                ec ? ec.message() : "a file of that name exists");
    // Partial shards of a pass with another number of ranks cannot be resumed by this one.
    const std::string ours = data::shard_file_name(0, comm.size()).substr(std::string("shard-00000").size());  // "-of-0000N.h5"
    for (const auto& entry : fs::directory_iterator(work)) {
      if (is_shard(entry.path()) && entry.path().filename().string().find(ours) == std::string::npos) {
        log::warn("{}: left by a pass with another number of ranks; removed", entry.path().string());
        fs::remove(entry.path());
      }
    }
  }
  comm.barrier();
  return work;
}

}  // namespace

PrecomputeSummary precompute(const PrecomputeOptions& o, dist::Communicator& comm) {
  const auto start = Clock::now();
  KDSEG_CHECK(!o.teacher.empty() && !o.data.empty() && !o.output.empty(),
              "precompute: --teacher, --data and --output are required");
  KDSEG_CHECK(o.batch_size >= 1, "precompute: --batch-size must be >= 1");
  KDSEG_CHECK(o.compression >= 0 && o.compression <= 9, "precompute: --compression must be 0-9");
  KDSEG_CHECK(o.device == "cpu" || o.device == "cuda", "precompute: --device must be cpu or cuda");
  const bool probs = o.format == data::CacheFormat::kProbsU8;
  KDSEG_CHECK(o.temperature >= 0, "precompute: --temperature must be > 0 (or 0: 1)");
  KDSEG_CHECK(probs || o.temperature == 0, "precompute: --temperature applies to probs-u8 caches; logits-f16 stores the ",
              "logits and distill applies its own --temperature");
  const double temperature = o.temperature > 0 ? o.temperature : 1.0;

  const c10::Device device = o.device == "cuda" ? dist::rank_cuda_device(comm) : c10::Device(c10::kCPU);

  // The slices: the selected folds' rows in store order.
  const data::PreparedStore store(o.data);
  const data::Task task = data::make_task(o.task, data::parse_layout(store.attribute("layout")));
  const std::vector<int64_t> rows = store.rows_in_folds(o.folds);
  KDSEG_CHECK(!rows.empty(), o.data, ": no slices in folds ", folds_text(o.folds));

  auto teacher = load_teacher(o.teacher, device);
  KDSEG_CHECK(teacher->classes() == task.classes, o.teacher, ": the teacher predicts ", teacher->classes(),
              " classes but task '", task.name, "' has ", task.classes, " (pass the teacher's --task)");

  const fs::path work = prepare_output(o, comm);

  data::CacheProvenance provenance;
  provenance.format = data::cache_format_name(o.format);
  if (probs) {
    std::ostringstream t;
    t.precision(17);
    t << temperature;
    provenance.temperature = t.str();
  } else {
    provenance.temperature = "applied when read";
  }
  provenance.teacher_file = fs::absolute(o.teacher).string();
  provenance.teacher_hash = hash_file(o.teacher);
  provenance.store_file = fs::absolute(o.data).string();
  provenance.store_hash = store.attribute("content_hash");
  provenance.folds = folds_text(o.folds);
  provenance.classes = std::to_string(task.classes);
  provenance.tool_version = KDSEG_TOOL_VERSION;
  provenance.created = utc_now_iso8601();

  // Fixed batches in store order; rank r takes the r-th contiguous block of them.
  const int64_t n = static_cast<int64_t>(rows.size());
  const int64_t batches = (n + o.batch_size - 1) / o.batch_size;
  const int64_t first_batch = batches * comm.rank() / comm.size(), end_batch = batches * (comm.rank() + 1) / comm.size();
  const int64_t first_row = std::min(n, first_batch * o.batch_size), end_row = std::min(n, end_batch * o.batch_size);

  data::CacheShardWriter::Geometry geometry;
  geometry.rank = comm.rank();
  geometry.world = comm.size();
  geometry.first_row = first_row;
  geometry.store_rows.assign(rows.begin() + first_row, rows.begin() + end_row);
  geometry.classes = task.classes;
  geometry.height = store.height();
  geometry.width = store.width();
  geometry.format = o.format;
  geometry.compression = o.compression;
  data::CacheShardWriter shard(work.string(), geometry, provenance);

  // This rank's batches that still have a slice to compute.
  std::vector<std::vector<data::DistributedSampler::Item>> plan;
  std::vector<int64_t> plan_first;  // local row of each planned batch
  for (int64_t b = first_batch; b < end_batch; ++b) {
    const int64_t local = b * o.batch_size - first_row;
    const int64_t count = std::min(o.batch_size, n - b * o.batch_size);
    bool all_done = true;
    std::vector<data::DistributedSampler::Item> items;
    for (int64_t i = 0; i < count; ++i) {
      all_done = all_done && shard.done(local + i);
      items.push_back({geometry.store_rows[static_cast<size_t>(local + i)], 0});
    }
    if (all_done) continue;
    plan.push_back(std::move(items));
    plan_first.push_back(local);
  }

  PrecomputeSummary summary;
  Progress progress("precompute", static_cast<int64_t>(plan.size()), comm.rank() == 0);
  if (!plan.empty()) {
    data::LoaderOptions lo;
    lo.workers = o.workers;
    lo.train = false;
    lo.augment.crop = 0;  // whole slices
    data::BatchLoader loader(o.data, task, lo, plan);
    for (size_t b = 0; b < plan.size(); ++b) {
      auto batch = loader.next();
      KDSEG_CHECK(batch.has_value(), "precompute: the loader ran out of batches");
      auto t0 = Clock::now();
      at::Tensor values;
      {
        torch::NoGradGuard no_grad;
        CudaAutocast autocast(device.is_cuda());
        const at::Tensor logits = teacher->logits(batch->images.to(device)).to(torch::kFloat);
        values = probs ? data::quantise_probabilities(torch::softmax(logits / temperature, 1))
                       // Clamped to half's range so that a confident teacher never stores inf.
                       : logits.clamp(-65504.0, 65504.0).to(torch::kHalf);
        values = values.to(torch::kCPU);
      }
      summary.teacher_seconds += seconds_since(t0);
      t0 = Clock::now();
      shard.write(plan_first[b], values);
      summary.write_seconds += seconds_since(t0);
      summary.computed += values.size(0);
      progress.advance(1);
      maybe_kill_for_test(comm.rank(), static_cast<int64_t>(b) + 1);
    }
    summary.wait_seconds = loader.wait_seconds();
  }
  shard.finish();
  progress.finish();
  // After a resume the ranks' remaining shares can differ by hours: no timeout on this wait.
  comm.wait_for_all();
  summary.master = (fs::path(o.output) / "soft_labels.h5").string();
  if (comm.rank() == 0) {
    if (work != fs::path(o.output)) promote_staged(o.output);  // the old cache stayed readable until now
    data::write_cache_master(o.output, comm.size());
  }
  comm.barrier();
  at::Tensor computed = torch::full({1}, summary.computed, torch::kLong);
  dist::all_reduce_any_device(comm, computed, dist::ReduceOp::kSum);
  summary.computed = computed.item<int64_t>();
  summary.slices = n;
  summary.seconds = seconds_since(start);
  return summary;
}

}  // namespace kdseg::teacher

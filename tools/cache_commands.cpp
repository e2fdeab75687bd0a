// `kdseg precompute`, `kdseg cache inspect`, `kdseg cache verify`, `kdseg verify`.
#include "tools/cache_commands.h"

#include <cstdio>
#include <iostream>
#include <optional>

#include "core/device.h"
#include "core/error.h"
#include "core/frozen_model.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/stop_request.h"
#include "core/zip_check.h"
#include "data/prepared_store.h"
#include "data/soft_label_cache.h"
#include "data/store_check.h"
#include "eval/held_out.h"
#include "teacher/precompute.h"
#include "tools/cli.h"
#include "tools/launch.h"

namespace kdseg::tools {
namespace po = boost::program_options;

void add_precompute_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("teacher", po::value<std::vector<std::string>>()->required()->composing(),
       "teacher: a kdseg checkpoint or a TorchScript file; given more than once, an ensemble (the mean of the "
       "teachers' probabilities, e.g. fold teachers)")
      ("data", po::value<std::string>()->required(), "prepared store (kdseg prepare)")
      ("output", po::value<std::string>()->required(), "cache folder (soft_labels.h5 and one shard per rank)")
      ("format", po::value<std::string>()->default_value("logits-f16"), enum_help<data::CacheFormat>().c_str())
      ("temperature", po::value<std::string>()->default_value("0"),
       "fit: calibrate the teacher on --calibration-folds and cache it calibrated; or, probs-u8 only, the softmax "
       "temperature of the stored probabilities (0: 1)")
      ("calibration-folds", po::value<std::string>()->default_value(""),
       "with --temperature fit: folds to fit T on, which the students must not train on (e.g. 1)")
      ("folds", po::value<std::string>()->default_value("all"), "folds whose slices to cache: all, or e.g. 1,2,3,4")
      ("fold", po::value<int>(),
       "the students' evaluation fold (their --fold): refuse a teacher that trained on a case of it")
      ("task", po::value<std::string>()->default_value("tumor"), ("the teacher's task: " + enum_help<data::TaskKind>()).c_str())
      ("batch-size", po::value<int64_t>()->default_value(8), "slices per teacher forward pass")
      ("compression", po::value<int>()->default_value(4), "deflate level 0-9 (0: uncompressed)")
      ("workers", po::value<int>()->default_value(2), "slice-reading threads per rank")
      ("force", po::bool_switch(), "replace a finished cache in --output")
      ("device", po::value<std::string>()->default_value("cpu"), (enum_help<c10::DeviceType>() + " (one GPU per rank, bf16)").c_str());
  // clang-format on
}

int run_precompute(const po::variables_map& vm) {
  teacher::PrecomputeOptions o;
  o.teachers = vm["teacher"].as<std::vector<std::string>>();
  o.data = vm["data"].as<std::string>();
  o.output = vm["output"].as<std::string>();
  o.format = parse_option<data::CacheFormat>(vm, "format");
  const std::string temperature = vm["temperature"].as<std::string>();
  o.fit_temperature = temperature == "fit";
  if (!o.fit_temperature) {
    const std::optional<double> t = parse_number(temperature);
    if (!t) throw po::error("--temperature must be a number or fit, got '" + temperature + "'");
    o.temperature = *t;
  }
  const std::string calibration_folds = vm["calibration-folds"].as<std::string>();
  if (!calibration_folds.empty()) o.calibration_folds = parse_folds(calibration_folds);
  o.folds = parse_folds(vm["folds"].as<std::string>());
  o.task = parse_task_option(vm);
  o.batch_size = vm["batch-size"].as<int64_t>();
  o.compression = vm["compression"].as<int>();
  o.workers = vm["workers"].as<int>();
  o.force = vm["force"].as<bool>();
  o.device = parse_option<c10::DeviceType>(vm, "device");
  if (vm.count("fold")) {
    const int fold = vm["fold"].as<int>();
    o.check_teacher = [fold](const FrozenModel& teacher, const std::string& file, const data::PreparedStore& store) {
      if (teacher.training_config().empty()) {
        log::warn("{}: not a kdseg checkpoint, so it cannot be checked to have held out fold {}", file, fold);
        return;
      }
      eval::check_held_out(teacher, file, store, store.rows_in_folds({fold}), fold, /*warn=*/true,
                           "students distilled from it and evaluated on fold " + std::to_string(fold) +
                               " would be scored on cases it taught them");
    };
  }
  return run_distributed(vm, o.device == c10::kCUDA, [&](dist::Communicator& comm) {
    install_stop_handlers();  // SIGTERM, SIGINT, SIGUSR1: stop after the batch, its shard flushed
    const teacher::PrecomputeSummary s = teacher::precompute(o, comm);
    if (!s.stopped_by.empty()) {
      std::printf("[rank %d] stopped by %s after computing %lld slices; run the same command again to continue\n",
                  comm.rank(), s.stopped_by.c_str(), static_cast<long long>(s.computed));
      return kExitStopped;
    }
    if (comm.rank() == 0) {
      std::printf(
          "cached %lld slices (%lld computed now, %lld resumed) in %.1f s: teacher %.1f s, writing %.1f s, "
          "waiting for data %.1f s (rank 0)\n%s\n",
          static_cast<long long>(s.slices), static_cast<long long>(s.computed),
          static_cast<long long>(s.slices - s.computed), s.seconds, s.teacher_seconds, s.write_seconds, s.wait_seconds,
          s.master.c_str());
      if (o.fit_temperature) {
        std::printf("calibrated: T = %.4g fitted on folds %s, NLL %.5f at T = 1 -> %.5f\n", s.calibration_temperature,
                    vm["calibration-folds"].as<std::string>().c_str(), s.nll_before, s.nll_after);
      }
    }
    return 0;
  });
}

void add_cache_inspect_options(po::options_description& d) {
  d.add_options()("cache", po::value<std::string>()->required(), "cache folder");
}

int run_cache_inspect(const po::variables_map& vm) {
  const data::CacheInspection c = data::inspect_cache(vm["cache"].as<std::string>());
  const data::CacheProvenance& p = c.provenance;
  std::printf("cache        %s\n", vm["cache"].as<std::string>().c_str());
  std::printf("shape        [%lld, %lld, %lld, %lld] (slices, classes, height, width)\n",
              static_cast<long long>(c.shape[0]), static_cast<long long>(c.shape[1]),
              static_cast<long long>(c.shape[2]), static_cast<long long>(c.shape[3]));
  std::printf("format       %s (temperature: %s)\n", p.format.c_str(), p.temperature.c_str());
  std::printf("shards       %d\n", c.shards);
  std::printf("size         %.2f MiB on disk, %.2f MiB of soft labels (%.2f MiB uncompressed)\n",
              static_cast<double>(c.file_bytes) / 1048576.0, static_cast<double>(c.stored_bytes) / 1048576.0,
              static_cast<double>(c.raw_bytes) / 1048576.0);
  std::printf("compression  %.2fx, %.3f bytes per voxel per class\n", c.compression_ratio(),
              c.bytes_per_voxel_per_class());
  std::printf("teacher      %s (hash %s)\n", p.teacher_file.c_str(), p.teacher_hash.c_str());
  std::printf("store        %s (content hash %s)\n", p.store_file.c_str(), p.store_hash.c_str());
  std::printf("folds        %s\n", p.folds.c_str());
  std::printf("calibration  %s\n", p.calibration.c_str());
  std::printf("created      %s by %s\n", p.created.c_str(), p.tool_version.c_str());
  return kExitOk;
}

void add_cache_verify_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("cache", po::value<std::string>()->required(), "cache folder")
      ("teacher", po::value<std::string>()->default_value(""), "check that the cache was made by this teacher file")
      ("data", po::value<std::string>()->default_value(""), "check that the cache was made from this prepared store");
  // clang-format on
}

int run_cache_verify(const po::variables_map& vm) {
  const std::string dir = vm["cache"].as<std::string>();
  const auto problems = data::verify_cache(dir, vm["data"].as<std::string>(), vm["teacher"].as<std::string>());
  if (problems.empty()) {
    std::printf("%s: sound (every slice present, checksums and provenance match)\n", dir.c_str());
    return kExitOk;
  }
  for (const auto& p : problems) std::fprintf(stderr, "%s\n", p.c_str());
  std::fprintf(stderr, "%s: %zu problem(s)\n", dir.c_str(), problems.size());
  return kExitError;
}

// `kdseg verify`: each kind's check prints the intact file's line and returns "" or the problem.
namespace {

std::string verify_store(const std::string& path) {
  const data::StoreCheck c = data::check_store_content(path);
  if (c.computed != c.recorded) {
    // The content hash's definition changed on 2026-12-04: older stores cannot be checked by it.
    if (c.created < "2026-12-04")
      return "written " + c.created +
             ", before the content hash took its present definition (2026-12-04): verify "
             "cannot check it; prepare the store again to make it verifiable";
    return "its slices give content hash " + c.computed + ", not the " + c.recorded +
           " prepare recorded: they changed after it wrote them; prepare the store again";
  }
  if (c.table_computed != c.table_recorded)
    return "its case table (geometry, files, folds, rater tables) gives table hash " + c.table_computed + ", not the " +
           c.table_recorded +
           " prepare recorded: it changed after it was written; prepare the store "
           "again";
  std::printf("%s: intact (%lld slices of %d cases give content hash %s, as recorded; %s; %.1f s)\n", path.c_str(),
              static_cast<long long>(c.slices), c.cases, c.computed.c_str(),
              c.table_recorded.empty() ? "its case table has no recorded hash (written before 2026-12-08)"
                                       : "the case table as recorded",
              c.seconds);
  return "";
}

std::string verify_model(const std::string& path) {
  const ZipCheck c = check_zip(path);
  if (!c.is_zip) return "not a zip archive, as every checkpoint and TorchScript module is";
  if (!c.damage.empty()) return c.damage;
  std::printf("%s: intact (the CRC-32 of each of its %lld records checks%s)\n", path.c_str(),
              static_cast<long long>(c.records - c.unchecked),
              c.unchecked > 0
                  ? ("; " + std::to_string(c.unchecked) + " records in another compression not checked").c_str()
                  : "");
  return "";
}

std::string verify_cache_folder(const std::string& path) {
  std::string all;
  for (const auto& p : data::verify_cache(path)) all += (all.empty() ? "" : "; ") + p;
  if (all.empty()) std::printf("%s: intact (every slice present, checksums and provenance match)\n", path.c_str());
  return all;
}

}  // namespace

void add_verify_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("data", po::value<std::vector<std::string>>()->composing(),
       "a prepared store: every slice read back, its content and table hashes recomputed (repeatable)")
      ("model", po::value<std::vector<std::string>>()->composing(),
       "a checkpoint or TorchScript module: every record's CRC-32 (repeatable)")
      ("cache", po::value<std::vector<std::string>>()->composing(),
       "a soft-label cache folder: as `kdseg cache verify` (repeatable)");
  // clang-format on
}

int run_verify(const po::variables_map& vm) {
  const std::pair<const char*, std::string (*)(const std::string&)> kinds[] = {
      {"data", verify_store}, {"model", verify_model}, {"cache", verify_cache_folder}};
  int files = 0, failed = 0;
  for (const auto& [option, verify] : kinds) {
    if (vm.count(option) == 0) continue;
    for (const std::string& path : vm[option].as<std::vector<std::string>>()) {
      ++files;
      // Each file on its own: one that cannot be read is reported and the others still checked.
      std::string problem;
      try {
        problem = verify(path);
      } catch (const Error& e) {
        problem = e.message();
      } catch (const std::exception& e) {
        problem = error_message(e);
      }
      if (problem.empty()) continue;
      if (problem.rfind(path + ": ", 0) == 0) problem.erase(0, path.size() + 2);  // named once, below
      ++failed;
      std::fprintf(stderr, "%s: FAILED: %s\n", path.c_str(), problem.c_str());
    }
  }
  if (files == 0) throw po::error("give at least one --data, --model or --cache to verify");
  if (failed > 0) std::fprintf(stderr, "%d of %d failed verification\n", failed, files);
  return failed > 0 ? kExitError : kExitOk;
}

}  // namespace kdseg::tools

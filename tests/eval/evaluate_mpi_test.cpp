// `kdseg evaluate` on 2 or 3 ranks reports what one rank reports: each rank evaluates whole
// cases, and rank 0 writes every case's predictions, those the other ranks made included.
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/file_util.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "eval/evaluate.h"
#include "tests/data/temp_dir.h"
#include "tests/dist/mpi_test_main.h"
#include "tests/eval/fixed_models.h"

namespace {
using kdseg::test::all_ranks;
using kdseg::test::world;
using nlohmann::json;

// Evaluation of the store in `dir` (fold 0) by a box model, its predictions written to `output`.
kdseg::eval::EvaluateOptions box_evaluation(const std::string& dir, const std::string& output, int bootstrap) {
  kdseg::eval::EvaluateOptions o;
  o.data = dir + "/p.h5";
  o.fold = 0;
  o.bootstrap = bootstrap;
  o.workers = 1;
  o.batch_size = 2;
  o.models = {{"box", "", std::make_shared<kdseg::test::BoxModel>(6, 16, 4, 20)}};
  o.save_predictions = true;
  o.output = output;
  return o;
}

TEST(DistributedEvaluation, RanksEvaluatingWholeCasesReportWhatOneRankReports) {
  std::unique_ptr<kdseg::test::TempDir> owner;
  const std::string dir = kdseg::test::shared_folder(owner);
  if (world().rank() == 0) kdseg::test::write_small_store(dir, 5, 24, 10, kdseg::data::SliceSelection::kAll);
  world().barrier();
  // Every case on exactly one rank, and more than one rank with cases.
  const kdseg::data::PreparedStore store(dir + "/p.h5");
  const int fold = 0;
  const std::vector<int64_t> rows = store.rows_in_folds({fold});
  std::map<int32_t, std::set<int>> ranks_of_case;
  std::set<int> busy;
  for (int r = 0; r < world().size(); ++r) {
    for (int64_t row : kdseg::data::evaluation_case_rows(rows, store.slice_case(), r, world().size())) {
      ranks_of_case[store.slice_case()[static_cast<size_t>(row)]].insert(r);
      busy.insert(r);
    }
  }
  int split = 0;
  for (const auto& [c, ranks] : ranks_of_case) split += ranks.size() > 1;

  kdseg::eval::EvaluateOptions o = box_evaluation(dir, dir + "/parallel", /*bootstrap=*/100);
  o.models.push_back({"everything", "", std::make_shared<kdseg::test::ConstantModel>(2, 1, 0.7)});
  const json parallel = kdseg::eval::evaluate(o, world());

  bool ok = split == 0 && busy.size() > 1;
  double worst = 0;
  if (world().rank() == 0) {
    auto local = kdseg::dist::make_communicator({kdseg::dist::Backend::kLocal});
    o.output = dir + "/single";
    const json single = kdseg::eval::evaluate(o, *local);
    for (size_t m = 0; m < 2; ++m) {
      const json& a = parallel.at("models")[m].at("cases");
      const json& b = single.at("models")[m].at("cases");
      ok = ok && a.size() == b.size() && !a.empty();
      for (size_t c = 0; ok && c < a.size(); ++c) {
        ok = a[c].at("id") == b[c].at("id") && a[c].at("slices") == b[c].at("slices");
        for (const char* metric : {"dice", "hd95", "assd", "nsd"}) {
          // Only rank 0 compares: a value that is not a number fails the check instead of throwing
          // while the other ranks wait in all_ranks().
          const json& x = a[c].at(metric).at("tumor");
          const json& y = b[c].at(metric).at("tumor");
          ok = ok && x.is_number() && y.is_number();
          if (ok) worst = std::max(worst, std::abs(x.get<double>() - y.get<double>()));
        }
      }
    }
    ok = ok && worst < 1e-9;
    // Every case's files, byte for byte what one rank writes.
    for (const auto& [c, ranks] : ranks_of_case) {
      for (const std::string suffix : {".nii.gz", "_probs.nii.gz"}) {
        for (const char* model : {"box", "everything"}) {
          const std::string name = std::string("/predictions/") + model + "/" + store.case_ids()[c] + suffix;
          ok = ok && kdseg::read_file(dir + "/parallel" + name) == kdseg::read_file(dir + "/single" + name);
        }
      }
    }
  }
  EXPECT_TRUE(all_ranks(ok)) << split << " case(s) split between ranks, " << busy.size()
                             << " ranks with cases; largest difference " << worst;
}

// A job brought down by MPI_Abort leaves its ranks' prediction folders in the node's temporary
// folder; the next evaluate removes those of processes that no longer run, and only those.
TEST(DistributedEvaluation, RankFoldersOfEndedProcessesAreRemoved) {
  namespace fs = std::filesystem;
  std::unique_ptr<kdseg::test::TempDir> owner;
  const std::string dir = kdseg::test::shared_folder(owner);
  const fs::path tmp = fs::temp_directory_path();
  std::vector<int64_t> pids{0};
  if (world().rank() == 0) {
    kdseg::test::write_small_store(dir, 5, 24, 10, kdseg::data::SliceSelection::kAll);
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    ::waitpid(child, nullptr, 0);
    pids[0] = child;  // ended
  }
  at::Tensor shared = torch::tensor(pids, torch::kLong);
  world().broadcast(shared, 0);
  const std::string ended = "kdseg-evaluate-" + std::to_string(shared[0].item<int64_t>()) + "-1";
  const fs::path running = tmp / ("kdseg-evaluate-" + std::to_string(::getpid()) + "-77");  // rank 0's
  if (world().rank() == 0) {
    fs::create_directories(tmp / ended / "box");
    std::ofstream(tmp / ended / "box" / "case.nii.gz") << "x";
    fs::create_directories(running);
  }
  world().barrier();

  kdseg::eval::evaluate(box_evaluation(dir, dir + "/out", /*bootstrap=*/10), world());

  bool ok = true;
  if (world().rank() == 0) {
    ok = !fs::exists(tmp / ended) && fs::exists(running);
    fs::remove_all(running);
    fs::remove_all(tmp / ended);
  }
  EXPECT_TRUE(all_ranks(ok)) << "the ended process's folder " << ended << " is removed and a running one's is kept";
}

// Another user of the node places links and folders under the names the ranks once staged their
// predictions in (kdseg-evaluate-<pid>-<rank>), a link into a folder of files they want to
// destroy: the ranks stage in folders of their own, and those files stay as they were.
TEST(DistributedEvaluation, RanksStageInPrivateFoldersNotInPlacedOnes) {
  namespace fs = std::filesystem;
  std::unique_ptr<kdseg::test::TempDir> owner;
  const std::string dir = kdseg::test::shared_folder(owner);
  const fs::path tmp = fs::temp_directory_path();
  if (world().rank() == 0) kdseg::test::write_small_store(dir, 5, 24, 10, kdseg::data::SliceSelection::kAll);
  at::Tensor pids = torch::zeros({world().size()}, torch::kLong);
  pids[world().rank()] = static_cast<int64_t>(::getpid());
  kdseg::dist::all_reduce_any_device(world(), pids, kdseg::dist::ReduceOp::kSum);
  std::vector<fs::path> placed;
  for (int r = 1; r < world().size(); ++r)
    placed.push_back(tmp / ("kdseg-evaluate-" + std::to_string(pids[r].item<int64_t>()) + "-" + std::to_string(r)));
  const fs::path victims = fs::path(dir) / "victims";
  std::vector<std::string> names, evaluated;  // every case's prediction files; fold 0's
  if (world().rank() == 0) {
    fs::create_directories(victims);
    const kdseg::data::PreparedStore store(dir + "/p.h5");
    std::set<int32_t> fold;
    for (int64_t row : store.rows_in_folds({0})) fold.insert(store.slice_case()[static_cast<size_t>(row)]);
    for (size_t c = 0; c < store.case_ids().size(); ++c) {
      const std::string& id = store.case_ids()[c];
      for (const std::string& name : {id + ".nii.gz", id + "_probs.nii.gz"}) {
        kdseg::write_file_atomic((victims / name).string(), "victim");
        names.push_back(name);
        if (fold.count(static_cast<int32_t>(c)) != 0) evaluated.push_back(name);
      }
    }
    for (const fs::path& link : placed) fs::create_directory_symlink(victims, link);
  }
  world().barrier();

  kdseg::eval::evaluate(box_evaluation(dir, dir + "/out", /*bootstrap=*/10), world());

  bool ok = true;
  if (world().rank() == 0) {
    for (const std::string& name : names) {
      ok = ok && fs::exists(victims / name) && kdseg::read_file((victims / name).string()) == "victim";
    }
    for (const std::string& name : evaluated)
      ok = ok && fs::exists(fs::path(dir) / "out" / "predictions" / "box" / name);
    ok = ok && !evaluated.empty();
    for (const fs::path& link : placed) {
      ok = ok && fs::is_symlink(link);
      fs::remove(link);
    }
  }
  EXPECT_TRUE(all_ranks(ok)) << "the files behind the placed links are unchanged and every case's predictions written";
}

}  // namespace

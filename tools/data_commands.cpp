// `kdseg synth` and `kdseg prepare`.
#include "tools/data_commands.h"

#include <iostream>
#include <optional>
#include <thread>

#include <torch/torch.h>

#include "core/error.h"
#include "core/log.h"
#include "core/parse.h"
#include "data/prepared_store.h"
#include "data/synth.h"
#include "tools/launch.h"

namespace kdseg::tools {
namespace po = boost::program_options;

namespace {
void print_prepare_summary(const data::PrepareOptions& o, const data::PrepareSummary& s) {
  std::cout << "prepared " << o.output << " (" << enum_name(s.layout) << ", " << s.image_dtype << " images)\n"
            << "  cases " << s.cases << ", slices kept " << s.slices << ", skipped cases " << s.skipped.size() << "\n"
            << "  fold:   ";
  for (size_t f = 0; f < s.cases_per_fold.size(); ++f)
    std::cout << "  " << f << ": " << s.cases_per_fold[f] << " cases/" << s.slices_per_fold[f] << " slices";
  if (s.raters > 0) std::cout << "\n  raters: " << s.raters << " per case";
  if (!s.rater_agreement.empty()) {
    std::cout << "\n  raters' agreement (pairwise Dice, median [10th, 90th percentile]): " << s.rater_agreement;
  }
  std::cout << "\n  labels: ";
  for (size_t v = 0; v < s.label_histogram.size(); ++v) std::cout << "  " << v << ": " << s.label_histogram[v];
  std::cout << "\n  content hash " << s.content_hash << ", " << s.seconds << " s ("
            << (s.seconds > 0 ? static_cast<double>(s.slices) / s.seconds : 0.0) << " slices/s)\n";
}
}  // namespace

void add_synth_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("layout", po::value<std::string>()->default_value("lits"), enum_help<data::Layout>().c_str())
      ("cases", po::value<int>()->default_value(4), "number of cases")
      ("output", po::value<std::string>()->required(), "folder to write the dataset into")
      ("seed", po::value<uint64_t>()->default_value(0), "random seed (the data are a function of it)")
      ("size", po::value<int64_t>()->default_value(64), "in-plane voxels")
      ("slices", po::value<int64_t>()->default_value(32), "axial slices per case")
      ("raters", po::value<int>()->default_value(0), "raters per case (kits23, qubiq): each writes its own masks")
      ("rater-model", po::value<std::string>()->default_value("threshold"), ("how the raters disagree: " + enum_help<data::RaterModel>()).c_str())
      ("from-annotations", po::value<std::string>(), "a folder of real KiTS-layout annotations without CT: write a simulated CT for each case in their exact grid, beside copies of the annotations (the options above do not apply)")
      ("force", po::bool_switch(), "write into a folder that holds other files (they may be replaced)");
  // clang-format on
}

int run_synth(const po::variables_map& vm) {
  if (vm.count("from-annotations") > 0) {
    for (const char* option : {"layout", "cases", "size", "slices", "raters", "rater-model"}) {
      KDSEG_CHECK(vm[option].defaulted(), "synth: --", option,
                  " does not apply to --from-annotations (the annotations give the cases, their grid and raters)");
    }
    data::AnnotationSynthOptions a;
    a.seed = vm["seed"].as<uint64_t>();
    a.force = vm["force"].as<bool>();
    const std::string in = vm["from-annotations"].as<std::string>(), out = vm["output"].as<std::string>();
    const data::AnnotationSynthSummary s = data::write_dataset_from_annotations(in, out, a);
    log::info("wrote a simulated CT for {} annotated cases of {} to {} ({} raters per case{})", s.cases, in, out,
              s.raters,
              s.already_imaged > 0 ? ", " + std::to_string(s.already_imaged) + " cases with a CT of their own left out"
                                   : std::string());
    return 0;
  }
  data::SynthOptions o;
  o.layout = parse_option<data::Layout>(vm, "layout");
  o.cases = vm["cases"].as<int>();
  o.seed = vm["seed"].as<uint64_t>();
  o.size = vm["size"].as<int64_t>();
  o.slices = vm["slices"].as<int64_t>();
  o.force = vm["force"].as<bool>();
  o.raters = vm["raters"].as<int>();
  o.rater_model = parse_option<data::RaterModel>(vm, "rater-model");
  const std::string out = vm["output"].as<std::string>();
  const data::SynthSummary s = data::write_synthetic_dataset(out, o);
  log::info("wrote {} {} cases of {}x{}x{} voxels to {} ({} tumour and {} organ voxels{})", s.cases,
            enum_name(o.layout), o.size, o.size, o.slices, out, s.tumour_voxels, s.organ_voxels,
            o.raters > 0 ? ", " + std::to_string(o.raters) + " raters per case" : std::string());
  return 0;
}

void add_prepare_options(po::options_description& d) {
  // clang-format off
  d.add_options()
      ("input", po::value<std::string>()->required(), "folder with the LiTS, KiTS or QUBIQ download")
      ("output", po::value<std::string>()->required(), "prepared store to write (HDF5)")
      ("layout", po::value<std::string>()->default_value("auto"), ("auto (detected), " + enum_help<data::Layout>()).c_str())
      ("raters", po::value<std::string>()->default_value("auto"), ("keep every rater's labels: " + enum_help<data::RaterSearch>() + ", or N: when the files exist, N raters per case (others: the count most cases have)").c_str())
      ("qubiq-task", po::value<int>()->default_value(1), "the QUBIQ task whose raters' masks are read (taskTT_segRR)")
      ("slices", po::value<std::string>()->default_value("tumor"), ("slices to keep: " + enum_help<data::SliceSelection>()).c_str())
      ("size", po::value<std::string>()->default_value("512"), "output in-plane size N (NxN) or native")
      ("folds", po::value<int>()->default_value(5), "number of cross-validation folds (by case)")
      ("compression", po::value<int>()->default_value(4), "deflate level 0-9 (0: none)")
      ("skip-bad-cases", po::bool_switch(), "log and skip bad cases instead of writing nothing")
      ("force", po::bool_switch(), "replace an existing output");
  // clang-format on
}

int run_prepare(const po::variables_map& vm) {
  data::PrepareOptions o;
  o.input = vm["input"].as<std::string>();
  o.output = vm["output"].as<std::string>();
  const std::string layout = vm["layout"].as<std::string>();
  o.detect_layout = layout == "auto";
  if (!o.detect_layout) o.layout = parse_option<data::Layout>(vm, "layout");
  o.slices = parse_option<data::SliceSelection>(vm, "slices");
  const std::string size = vm["size"].as<std::string>();
  if (size == "native") {
    o.size = 0;
  } else {
    const std::optional<int64_t> parsed = parse_integer(size);
    if (!parsed) throw po::error("--size must be a number or 'native', got '" + size + "'");
    o.size = *parsed;
    if (o.size <= 0) throw po::error("--size must be positive, got " + size);
  }
  o.folds = vm["folds"].as<int>();
  o.compression = vm["compression"].as<int>();
  o.skip_bad_cases = vm["skip-bad-cases"].as<bool>();
  o.force = vm["force"].as<bool>();
  // --raters N: the count every case must have, where a stray mask or a missing one could leave
  // no count that most cases share.
  if (const std::optional<int64_t> count = parse_integer(vm["raters"].as<std::string>())) {
    if (*count < 1 || *count > 1000) throw po::error("--raters N must be 1-1000, got " + std::to_string(*count));
    o.rater_count = static_cast<int>(*count);
  } else {
    o.raters = parse_option<data::RaterSearch>(vm, "raters");
  }
  o.qubiq_task = vm["qubiq-task"].as<int>();
  if (o.qubiq_task < 1) throw po::error("--qubiq-task must be 1 or more, got " + std::to_string(o.qubiq_task));
  return run_distributed(vm, /*cuda=*/false, [&](dist::Communicator& comm) {
    // The threads run_distributed gave this rank (--threads, or its share of the node's cores).
    o.threads = at::get_num_threads();
    // prepare's threads are its own (one slice each); LibTorch's pool would only spin beside them.
    at::set_num_threads(1);
    data::PrepareRanks ranks;
    ranks.rank = comm.rank();
    ranks.size = comm.size();
    ranks.sum = [&](std::vector<int64_t>& values) {
      at::Tensor t = torch::tensor(values, torch::kLong);
      comm.all_reduce(t, dist::ReduceOp::kSum);
      for (size_t i = 0; i < values.size(); ++i) values[i] = t[static_cast<int64_t>(i)].item<int64_t>();
    };
    ranks.wait_for_all = [&] { comm.wait_for_all(); };
    const data::PrepareSummary s = data::prepare_store(o, ranks);
    if (comm.rank() == 0) print_prepare_summary(o, s);
    return 0;
  });
}

}  // namespace kdseg::tools

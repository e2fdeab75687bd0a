// Dataset-scale prepare and evaluate: seconds, slices/s and peak memory of `kdseg prepare` and
// `kdseg evaluate` (run as child processes, peak RSS from wait4) on a LiTS-sized and a
// KiTS23-sized synthetic CT, against a baseline run in the same process on the same files:
// gunzip of the image (zlib) + H5Dwrite of its raw voxels, uncompressed and through HDF5's own
// shuffle + deflate filters at the store's level.
//
//   dataset_bench --kdseg build/tools/kdseg [--dir /tmp/kdseg-dataset-bench] [--lits-slices 987]
//                 [--kits-slices 1024] [--size 512] [--threads N] [--mpirun N] [--keep]
//   dataset_bench --write-model PATH   (the benchmark's model alone, for tests)
//
// The fixed overhead (LibTorch, HDF5, MPI, batches and activations at the slice size) is measured
// on an 8-slice case of the same size and printed, so that "above fixed" memory is what grows
// with the case. CI runs it with small sizes. A failed run, or stores of the same input with other
// bytes (threads against ranks), make it exit 1.
#include <hdf5.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "data/nifti.h"

namespace {
namespace fs = std::filesystem;
namespace D = kdseg::data;
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Case {
  std::string name, layout, input, image;
  int64_t size = 512, slices = 0;
  double raw_mb() const { return static_cast<double>(size * size * slices * 2) / 1e6; }
};

// A CT-like volume written plane by plane: air, a body ellipse of soft tissue with noise, an organ
// (liver or kidneys) and a tumour, in LPS-like axes (x and y flipped) as scanners write them.
void write_case(const Case& c, int threads) {
  fs::create_directories(fs::path(c.image).parent_path());
  const bool kits = c.layout == "kits23";
  const std::string label_file = kits ? (fs::path(c.image).parent_path() / "segmentation.nii.gz").string()
                                      : (fs::path(c.image).parent_path() / "segmentation-0.nii.gz").string();
  D::Affine affine{};
  affine[0] = -0.78;
  affine[5] = -0.78;
  affine[10] = kits ? 0.5 : 1.0;
  affine[15] = 1;
  const std::array<int64_t, 3> shape = {c.size, c.size, c.slices};
  D::NiftiPlaneWriter image(c.image, shape, affine, D::NiftiType::kInt16, threads);
  D::NiftiPlaneWriter label(label_file, shape, affine, D::NiftiType::kUint8, threads);
  const auto n = static_cast<double>(c.size);
  const at::Tensor i = torch::arange(c.size, torch::kFloat).div(n).unsqueeze(1).expand({c.size, c.size});
  const at::Tensor j = torch::arange(c.size, torch::kFloat).div(n).unsqueeze(0).expand({c.size, c.size});
  const at::Tensor body = ((i - 0.5).pow(2) / 0.16 + (j - 0.5).pow(2) / 0.1) < 1;
  torch::manual_seed(7);
  for (int64_t k = 0; k < c.slices; ++k) {
    const double z = static_cast<double>(k) / static_cast<double>(c.slices);
    const double organ_r = 0.2 * std::max(0.0, 1 - std::pow((z - 0.5) / 0.3, 2));
    const at::Tensor organ =
        body & (((i - (kits ? 0.35 : 0.4)).pow(2) + (j - 0.45).pow(2)) < organ_r * organ_r * (kits ? 0.3 : 1.0));
    const double tumour_r = 0.05 * std::max(0.0, 1 - std::pow((z - 0.5) / 0.05, 2));
    const at::Tensor tumour = organ & (((i - 0.4).pow(2) + (j - 0.45).pow(2)) < tumour_r * tumour_r);
    at::Tensor hu = torch::full({c.size, c.size}, -1024.0) + torch::randn({c.size, c.size}) * 5;
    hu = torch::where(body, 40 + torch::randn({c.size, c.size}) * 20, hu);
    hu = torch::where(organ, 90 + torch::randn({c.size, c.size}) * 15, hu);
    hu = torch::where(tumour, 60 + torch::randn({c.size, c.size}) * 15, hu);
    image.write(hu.round());
    label.write(organ.to(torch::kByte) + tumour.to(torch::kByte));
  }
  image.close();
  label.close();
}

// The baseline on the same file: gunzip (zlib) + H5Dwrite of the voxels, without and with the
// store's filters (one slice per chunk, shuffle, deflate `level`). Seconds of each.
std::pair<double, double> baseline(const Case& c, const std::string& dir, int level) {
  const size_t plane = static_cast<size_t>(c.size * c.size), bytes = plane * static_cast<size_t>(c.slices) * 2;
  std::vector<int16_t> voxels(bytes / 2);
  double seconds[2] = {0, 0};
  for (int filtered = 0; filtered < 2; ++filtered) {
    const auto t = Clock::now();
    gzFile in = gzopen(c.image.c_str(), "rb");
    gzbuffer(in, 1 << 20);
    char header[352];
    gzread(in, header, sizeof header);
    for (size_t done = 0; done < bytes;) {
      const int got = gzread(in, reinterpret_cast<char*>(voxels.data()) + done,
                             static_cast<unsigned>(std::min<size_t>(bytes - done, 1u << 30)));
      if (got <= 0) break;
      done += static_cast<size_t>(got);
    }
    gzclose(in);
    const std::string path = dir + "/baseline.h5";
    const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dims[3] = {static_cast<hsize_t>(c.slices), static_cast<hsize_t>(c.size),
                             static_cast<hsize_t>(c.size)};
    const hid_t space = H5Screate_simple(3, dims, nullptr);
    const hid_t props = H5Pcreate(H5P_DATASET_CREATE);
    if (filtered) {
      const hsize_t chunk[3] = {1, dims[1], dims[2]};
      H5Pset_chunk(props, 3, chunk);
      H5Pset_shuffle(props);
      H5Pset_deflate(props, static_cast<unsigned>(level));
    }
    const hid_t set = H5Dcreate2(file, "image", H5T_NATIVE_INT16, space, H5P_DEFAULT, props, H5P_DEFAULT);
    H5Dwrite(set, H5T_NATIVE_INT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, voxels.data());
    H5Dclose(set);
    H5Pclose(props);
    H5Sclose(space);
    H5Fclose(file);
    seconds[filtered] = since(t);
    fs::remove(path);
  }
  return {seconds[0], seconds[1]};
}

// A trivial TorchScript model, so that evaluate's own cost shows: smoothed intensity above a
// threshold, which finds the organ as a network would (a structure, not speckle).
void write_model(const std::string& path) {
  torch::jit::Module m("Trivial");
  m.define(
      "def forward(self, x):\n"
      "    s = torch.avg_pool2d(x, 5, 1, 2)\n"
      "    return torch.cat([0.3 - s, s - 0.3], 1)\n");
  m.save(path);
}

struct Run {
  double seconds = 0, peak_mb = 0;
  int status = 0;
};

// Runs `args` as a child process, its output to `log`; peak RSS of it and its descendants.
Run run(const std::vector<std::string>& args, const std::string& log) {
  std::fflush(stdout);
  const auto t = Clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    std::FILE* out = std::freopen(log.c_str(), "w", stdout);
    if (out == nullptr || dup2(fileno(stdout), 2) < 0) _exit(127);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  Run r;
  r.seconds = since(t);
  r.peak_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Returns whether the run succeeded.
bool print_row(const char* what, const Case& c, const Run& r, int64_t slices, double fixed_mb, double baseline_s) {
  const double per_case = std::max(0.0, r.peak_mb - fixed_mb) / c.raw_mb();
  std::printf("%-9s %-28s %7.1f s %7.1f slices/s %7.0f MB %6.2fx raw (%5.2fx above fixed)", c.name.c_str(), what,
              r.seconds, static_cast<double>(slices) / r.seconds, r.peak_mb, r.peak_mb / c.raw_mb(), per_case);
  if (baseline_s > 0) std::printf("  %5.2fx baseline", baseline_s / r.seconds);
  std::printf("%s\n", r.status == 0 ? "" : "  FAILED (see the log)");
  return r.status == 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string kdseg = "kdseg", dir = (fs::temp_directory_path() / "kdseg-dataset-bench").string();
  int64_t lits_slices = 987, kits_slices = 1024, size = 512;
  int threads = static_cast<int>(std::thread::hardware_concurrency()), ranks = 0, level = 4;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    const auto value = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (k == "--kdseg") kdseg = value();
    else if (k == "--dir") dir = value();
    else if (k == "--lits-slices") lits_slices = std::stoll(value());
    else if (k == "--kits-slices") kits_slices = std::stoll(value());
    else if (k == "--size") size = std::stoll(value());
    else if (k == "--threads") threads = std::stoi(value());
    else if (k == "--mpirun") ranks = std::stoi(value());
    else if (k == "--keep") keep = true;
    else if (k == "--write-model") {
      write_model(value());
      return 0;
    } else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  kdseg = fs::absolute(kdseg).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  torch::set_num_threads(threads);
  ::setenv("SOURCE_DATE_EPOCH", "1767225600", 1);  // stores of the same input: the same bytes
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);

  const std::string model = dir + "/trivial.pt";
  write_model(model);
  // The fixed overhead: the same commands on 8 slices of the same size (LibTorch, HDF5, MPI, the
  // loader's batches and the model's activations at this slice size).
  std::vector<Case> cases = {
      {"fixed", "lits", dir + "/fixed", dir + "/fixed/volume-0.nii.gz", size, 8},
      {"LiTS", "lits", dir + "/lits", dir + "/lits/volume-0.nii.gz", size, lits_slices},
      {"KiTS23", "kits23", dir + "/kits", dir + "/kits/case_00000/imaging.nii.gz", size, kits_slices}};
  std::printf("dataset_bench: %d threads, %s, deflate level %d\n", threads, kdseg.c_str(), level);
  double fixed_prepare = 0, fixed_evaluate = 0;
  bool ok = true;  // every run succeeded and every store of the same input has the same bytes
  for (const Case& c : cases) {
    auto t = Clock::now();
    write_case(c, threads);
    if (c.name != "fixed") {
      std::printf("\n%s: %lldx%lldx%lld int16, %.0f MB raw, %.0f MB .nii.gz, written in %.1f s\n", c.name.c_str(),
                  static_cast<long long>(c.size), static_cast<long long>(c.size), static_cast<long long>(c.slices),
                  c.raw_mb(), static_cast<double>(fs::file_size(c.image)) / 1e6, since(t));
    }
    const auto [raw_s, filtered_s] = baseline(c, dir, level);
    const std::string store = c.input + ".h5", report = c.input + "-report";
    const std::vector<std::string> prepare = {kdseg,
                                              "prepare",
                                              "--input",
                                              c.input,
                                              "--output",
                                              store,
                                              "--layout",
                                              c.layout,
                                              "--slices",
                                              "all",
                                              "--size",
                                              "native",
                                              "--folds",
                                              "1",
                                              "--force",
                                              "--log-level",
                                              "warn",
                                              "--threads",
                                              std::to_string(threads)};
    const Run p = run(prepare, c.input + "-prepare.log");
    std::vector<std::string> evaluate = {
        kdseg,      "evaluate", "--data",      store,  "--model",      model,
        "--output", report,     "--fold",      "0",    "--no-figures", "--bootstrap",
        "200",      "--force",  "--log-level", "warn", "--threads",    std::to_string(threads)};
    const Run e = run(evaluate, c.input + "-evaluate.log");
    evaluate.push_back("--save-predictions");
    const Run s = run(evaluate, c.input + "-predictions.log");
    if (c.name == "fixed") {
      fixed_prepare = p.peak_mb;
      fixed_evaluate = std::max(e.peak_mb, s.peak_mb);
      std::printf("fixed overhead (a %lldx%lldx8 case): prepare %.0f MB, evaluate %.0f MB\n",
                  static_cast<long long>(c.size), static_cast<long long>(c.size), fixed_prepare, fixed_evaluate);
      continue;
    }
    std::printf("%-9s %-28s %7.1f s %7.1f slices/s\n", c.name.c_str(), "baseline gunzip + H5Dwrite", raw_s,
                static_cast<double>(c.slices) / raw_s);
    std::printf("%-9s %-28s %7.1f s %7.1f slices/s\n", c.name.c_str(), "  ... with shuffle + deflate", filtered_s,
                static_cast<double>(c.slices) / filtered_s);
    ok &= print_row("kdseg prepare", c, p, c.slices, fixed_prepare, raw_s);
    std::printf("%-9s %-28s %38s %5.2fx filtered baseline\n", c.name.c_str(), "", "", filtered_s / p.seconds);
    if (ranks > 1 && c.layout == "lits") {
      // Cases split across ranks: 4 cases (links to this one), one process against mpirun -np N,
      // and whether the two stores hold the same bytes.
      const std::string copies = c.input + "-4";
      fs::create_directories(copies);
      for (int k = 0; k < 4; ++k) {
        for (const char* kind : {"volume", "segmentation"}) {
          fs::create_symlink(fs::absolute(fs::path(c.input) / (std::string(kind) + "-0.nii.gz")),
                             fs::path(copies) / (std::string(kind) + "-" + std::to_string(k) + ".nii.gz"));
        }
      }
      std::vector<std::string> one = prepare;
      one[3] = copies;
      one[5] = copies + ".h5";
      const Run single = run(one, copies + "-prepare.log");
      std::vector<std::string> parallel = one;
      parallel[5] = copies + "-mpi.h5";
      parallel.back() = std::to_string(std::max(1, threads / ranks));
      const std::vector<std::string> mpi = {"mpirun", "--allow-run-as-root", "--oversubscribe", "-np",
                                            std::to_string(ranks)};
      parallel.insert(parallel.begin(), mpi.begin(), mpi.end());
      const Run m = run(parallel, copies + "-prepare-mpi.log");
      // Memory against the largest case (all four are the same), speed over all slices.
      ok &= print_row("prepare, 4 cases", c, single, 4 * c.slices, fixed_prepare, 0);
      ok &= print_row(("mpirun -np " + std::to_string(ranks) + " prepare, 4 cases").c_str(), c, m, 4 * c.slices,
                      fixed_prepare, 0);
      const bool same = fs::exists(copies + ".h5") && fs::exists(copies + "-mpi.h5") &&
                        run({"cmp", "-s", copies + ".h5", copies + "-mpi.h5"}, copies + "-cmp.log").status == 0;
      std::printf("%-9s %-28s %s\n", c.name.c_str(), "", same ? "the same store bytes" : "DIFFERENT store bytes");
      ok &= same;
      fs::remove_all(copies);
      fs::remove(copies + ".h5");
      fs::remove(copies + "-mpi.h5");
    }
    ok &= print_row("kdseg evaluate", c, e, c.slices, fixed_evaluate, 0);
    ok &= print_row("evaluate --save-predictions", c, s, c.slices, fixed_evaluate, 0);
    if (!keep) {
      fs::remove_all(c.input);
      fs::remove(store);
      fs::remove_all(report);
    }
  }
  if (!ok) std::fprintf(stderr, "dataset_bench: a run failed or stores of the same input differ\n");
  return ok ? 0 : 1;
}

// Forward+backward time and peak memory of kdseg's DML against a naive composition of LibTorch
// ops (the reference implementation's formulation: log_softmax().exp(), one-hot labels,
// torch::norm per class) on CPU, side by side in one run; then dml_statistics on probabilities
// (the public entry for callers that have them) against its ATen composition.
//
// Each row also prints the largest error of kdseg's loss value and gradient against the baseline's
// on the same inputs (relative to the baseline's largest magnitude); one above 1e-4 (float32
// summation order allows ~1e-6) makes the program exit 1.
//
// usage: loss_bench [--threads N] [--reps R] [--quick]
// Peak memory is measured in a fresh child process per row (this program re-executed with
// --child): the peak resident set above the resident set before the first step.
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "bench/bench_check.h"
#include "core/losses/dml.h"

namespace {
using torch::Tensor;
namespace L = kdseg::losses;

// The reference formulation, op by op.
Tensor naive_dml(const Tensor& logits, const Tensor& target) {
  const int64_t b = logits.size(0), c = logits.size(1);
  const Tensor prob = logits.view({b, c, -1}).log_softmax(1).exp();
  Tensor label;
  if (target.is_floating_point()) {
    label = target.view({b, c, -1});
  } else {
    label = torch::one_hot(target.view({b, -1}), c).permute({0, 2, 1}).to(prob.scalar_type());
  }
  const Tensor prob_card = torch::norm(prob, 1, {2});
  const Tensor label_card = torch::norm(label, 1, {2});
  const Tensor diff_card = torch::norm(prob - label, 1, {2});
  const Tensor tp = (prob_card + label_card - diff_card) / 2;
  const Tensor fp = prob_card - tp, fn = label_card - tp;
  const Tensor tps = tp.sum(0), fps = fp.sum(0), fns = fn.sum(0);
  const Tensor dice = (tps + 1.0) / (tps + 0.5 * fps + 0.5 * fns + 1.0);
  const Tensor active = label.amax({0, 2}) > 0.01;
  return (1.0 - dice).masked_select(active).mean();
}

struct Case {
  std::string name;
  std::vector<int64_t> shape;
  bool hard;
};

struct Inputs {
  Tensor logits, target;
};

Inputs make_inputs(const Case& c) {
  torch::manual_seed(0);
  Inputs in;
  in.logits = torch::randn(c.shape).requires_grad_(true);
  std::vector<int64_t> spatial = c.shape;
  spatial.erase(spatial.begin() + 1);
  in.target = c.hard ? torch::randint(0, c.shape[1], spatial, torch::kLong) : torch::softmax(torch::randn(c.shape), 1);
  return in;
}

constexpr double kTolerance = 1e-4;

Tensor step(const Inputs& in, bool fused) {
  in.logits.mutable_grad() = Tensor();
  const Tensor loss = fused ? L::dml_loss(in.logits, in.target) : naive_dml(in.logits, in.target);
  loss.backward();
  return loss.detach();
}

// The larger of the loss's and the gradient's relative error, fused against naive.
double fused_error(const Inputs& in) {
  const Tensor naive = step(in, false), naive_grad = in.logits.grad().clone();
  const Tensor fused = step(in, true);
  return std::max(kdseg::bench::relative_error(fused, naive),
                  kdseg::bench::relative_error(in.logits.grad(), naive_grad));
}

double median_ms(const Inputs& in, bool fused, int reps) {
  step(in, fused);  // warm-up
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    step(in, fused);
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

long status_kib(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::strlen(field)));
  }
  return -1;
}

// In the child: peak resident memory of one step above the resident memory before it.
int child_main(const std::vector<Case>& cases, int index, bool fused) {
  const Inputs in = make_inputs(cases[static_cast<size_t>(index)]);
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current RSS
  const long before = status_kib("VmRSS:");
  step(in, fused);
  const long peak = status_kib("VmHWM:");
  std::printf("%ld\n", peak - before);
  return 0;
}

double peak_mib(const char* self, int index, bool fused, int threads) {
  int pipe_fd[2];
  if (pipe(pipe_fd) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fd[1], STDOUT_FILENO);
    close(pipe_fd[0]);
    const std::string i = std::to_string(index), t = std::to_string(threads);
    execl(self, self, "--child", i.c_str(), fused ? "fused" : "naive", "--threads", t.c_str(), nullptr);
    _exit(127);
  }
  close(pipe_fd[1]);
  char buffer[64] = {0};
  const ssize_t n = read(pipe_fd[0], buffer, sizeof buffer - 1);
  close(pipe_fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return n > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? std::atof(buffer) / 1024.0 : -1.0;
}

std::vector<Case> bench_cases(bool quick) {
  std::vector<Case> cases;
  if (quick) {
    cases.push_back({"[2,2,96,96] hard", {2, 2, 96, 96}, true});
    cases.push_back({"[2,2,96,96] soft", {2, 2, 96, 96}, false});
    return cases;
  }
  cases.push_back({"[8,2,384,384] hard", {8, 2, 384, 384}, true});
  cases.push_back({"[8,2,384,384] soft", {8, 2, 384, 384}, false});
  cases.push_back({"[2,3,128,128,128] hard", {2, 3, 128, 128, 128}, true});
  cases.push_back({"[2,3,128,128,128] soft", {2, 3, 128, 128, 128}, false});
  return cases;
}

// dml_statistics + dml_from_statistics forward+backward on probabilities: the fused CPU kernel,
// or the ATen composition used on other devices (the baseline).
struct ProbabilityRow {
  double ms = 0;
  Tensor loss, grad;  // of the last step
};
ProbabilityRow probabilities_ms(const Case& c, bool fused, int reps) {
  torch::manual_seed(0);
  const Tensor prob = torch::softmax(torch::randn(c.shape), 1).requires_grad_(true);
  std::vector<int64_t> spatial = c.shape;
  spatial.erase(spatial.begin() + 1);
  const Tensor target =
      c.hard ? torch::randint(0, c.shape[1], spatial, torch::kLong) : torch::softmax(torch::randn(c.shape), 1);
  const L::DmlOptions options;
  ProbabilityRow row;
  const auto once = [&] {
    prob.mutable_grad() = Tensor();
    const auto stats = fused ? L::dml_statistics(prob, target, {}, options)
                             : L::detail::dml_statistics_composite(prob, target, {}, options);
    const Tensor loss = L::dml_from_statistics(stats, options);
    loss.backward();
    row.loss = loss.detach();
  };
  once();  // warm-up
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    once();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  row.ms = times[times.size() / 2];
  row.grad = prob.grad().clone();
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  int reps = 10;
  bool quick = false;
  int child_index = -1;
  bool child_fused = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (arg == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (arg == "--quick") quick = true;
    else if (arg == "--child" && i + 2 < argc) {
      child_index = std::atoi(argv[++i]);
      child_fused = std::string(argv[++i]) == "fused";
    } else {
      std::fprintf(stderr, "usage: loss_bench [--threads N] [--reps R] [--quick]\n");
      return 2;
    }
  }
  torch::set_num_threads(threads);
  const std::vector<Case> cases = bench_cases(quick);
  if (child_index >= 0) return child_main(cases, child_index, child_fused);

  std::printf("DML forward+backward on CPU, float32, %d threads, LibTorch %s, median of %d\n", threads, TORCH_VERSION,
              reps);
  std::printf("%-24s %12s %12s %8s %14s %14s %8s %10s\n", "input", "naive ms", "kdseg ms", "speedup", "naive peak MiB",
              "kdseg peak MiB", "ratio", "max err");
  kdseg::bench::ErrorCheck check(kTolerance);
  for (size_t i = 0; i < cases.size(); ++i) {
    const double naive_mem = peak_mib(argv[0], static_cast<int>(i), false, threads);
    const double fused_mem = peak_mib(argv[0], static_cast<int>(i), true, threads);
    const Inputs in = make_inputs(cases[i]);
    const double naive = median_ms(in, false, reps);
    const double fused = median_ms(in, true, reps);
    const double error = check.record(fused_error(in));
    std::printf("%-24s %12.1f %12.1f %7.2fx %14.1f %14.1f %7.2fx %10.2g\n", cases[i].name.c_str(), naive, fused,
                naive / fused, naive_mem, fused_mem, fused_mem > 0 ? naive_mem / fused_mem : 0.0, error);
  }
  std::printf("\ndml_statistics on probabilities, forward+backward, median of %d\n", reps);
  std::printf("%-24s %16s %12s %8s %10s\n", "input", "composite ms", "kdseg ms", "speedup", "max err");
  for (const Case& c : cases) {
    const ProbabilityRow composite = probabilities_ms(c, false, reps), fused = probabilities_ms(c, true, reps);
    const double error = check.record(std::max(kdseg::bench::relative_error(fused.loss, composite.loss),
                                               kdseg::bench::relative_error(fused.grad, composite.grad)));
    std::printf("%-24s %16.1f %12.1f %7.2fx %10.2g\n", c.name.c_str(), composite.ms, fused.ms, composite.ms / fused.ms,
                error);
  }
  return check.exit_status("loss_bench");
}

// Training-step benchmarks of the paper's UNet.
//
//   step_bench loss-share [--arch unet-resnet18d] [--batch 8] [--size 384] [--reps 3]
//     Time of forward+backward of the network with the paper's objective (CE + DML, auxiliary
//     head) against the objective's own forward+backward on the same logits: the loss's share.
//   step_bench train-step [--arch unet-resnet18d] [--batch 8] [--size 384] [--reps 3] [--python bench/unet_step.py]
//                         [--device cpu|cuda] [--channels-last 1|0]
//     A full training step (forward, CE + DML + auxiliary CE, backward, AdamW) in C++ against the
//     same network and step in PyTorch eager from Python (bench/unet_step.py, same thread count),
//     run one after the other by this program; prints the ratio C++/Python. Both run as the
//     trainer does: channels-last (unless --channels-last 0), and on CUDA bf16 autocast and cuDNN
//     autotuning, where the table adds the achieved TFLOP/s from the step's FLOPs as PyTorch's
//     FLOP counter measures them.
//   step_bench optimizer [--arch unet-resnet18d] [--reps 20] [--device cpu|cuda]
//     One AdamW step over the network's parameters (the trainer's groups: decoder at 10x, no
//     decay on biases and norms): LibTorch's per-parameter AdamW (baseline) against kdseg's
//     multi-tensor AdamW.
//   [mpirun -np 2] step_bench sync-bn [--batch 8] [--size 192] [--reps 5]
//     Forward + backward of kdseg's SyncBatchNorm2d on [B,64,S,S] channels-last activations
//     against LibTorch's BatchNorm2d (which reduces nothing: the baseline of the normalisation).
//   mpirun -np 2 step_bench overlap [--batch 2] [--size 256] [--reps 3]
//     Step time with gradient buckets reduced during backward, against reducing after
//     backward, against no reduction at all (each rank alone), same job.
//
// optimizer, sync-bn and overlap also print, on kdseg's row, its largest error against the
// baseline on the same inputs (relative to the baseline's largest magnitude): the parameters
// after two steps from the same start (optimizer), the output against batch norm over every
// rank's batch gathered (sync-bn), the reduced gradients (overlap); one above kTolerance makes
// the program exit 1. loss-share times parts of one computation and train-step runs networks of
// different initial weights, so they have no result to compare.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "bench/bench_check.h"
#include "core/adamw.h"
#include "core/autocast.h"
#include "core/losses/distill.h"
#include "core/models/unet.h"
#include "dist/data_parallel.h"
#include "dist/sync_batch_norm.h"

namespace {
namespace M = kdseg::models;
namespace L = kdseg::losses;
namespace D = kdseg::dist;
using Clock = std::chrono::steady_clock;

struct Args {
  std::string mode, arch = "unet-resnet18d", python = "bench/unet_step.py", device = "cpu";
  int64_t batch = 8, size = 384;
  int reps = 3, threads = 0;
  bool channels_last = true;
};

// float32 results that differ only in the order of their sums.
constexpr double kTolerance = 1e-4;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

template <typename F>
double median(F&& f, int reps) {
  f();  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    t.push_back(seconds_since(t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

void restore(const std::vector<at::Tensor>& parameters, const std::vector<at::Tensor>& values) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters.size(); ++i) parameters[i].copy_(values[i]);
}

// The largest relative error of got[i] against expected[i] over every i (undefined tensors agree
// only with undefined ones).
double largest_error(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& expected) {
  if (got.size() != expected.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].defined() != expected[i].defined()) return INFINITY;
    if (got[i].defined()) worst = std::max(worst, kdseg::bench::relative_error(got[i], expected[i]));
  }
  return worst;
}

int loss_share(const Args& a) {
  torch::manual_seed(0);
  M::UNet net(M::UNetOptions().encoder(kdseg::parse_enum<M::Encoder>("--arch", a.arch)));
  const at::Tensor x = torch::randn({a.batch, 1, a.size, a.size});
  const at::Tensor y = torch::randint(0, 2, {a.batch, a.size, a.size}, torch::kLong);
  const L::SegmentationObjective objective;
  const double step = median(
      [&] {
        net->zero_grad();
        const auto out = net(x);
        objective({out.logits, out.aux, y, at::Tensor(), at::Tensor()}).total.backward();
      },
      a.reps);
  const auto out = net(x);
  const at::Tensor z = out.logits.detach().requires_grad_(true), aux = out.aux.detach().requires_grad_(true);
  const double loss = median([&] { objective({z, aux, y, at::Tensor(), at::Tensor()}).total.backward(); }, a.reps);
  const double dml = median([&] { L::dml_loss(z, y).backward(); }, a.reps);
  std::printf("%s, batch %lld, %lldx%lld, %d threads, LibTorch %s, median of %d\n", a.arch.c_str(),
              static_cast<long long>(a.batch), static_cast<long long>(a.size), static_cast<long long>(a.size),
              torch::get_num_threads(), TORCH_VERSION, a.reps);
  std::printf("%-44s %10s %8s\n", "part", "seconds", "share");
  std::printf("%-44s %10.3f %7.1f%%\n", "training step (network + objective, fwd+bwd)", step, 100.0);
  std::printf("%-44s %10.3f %7.1f%%\n", "objective: CE + DML + aux CE (fwd+bwd)", loss, 100 * loss / step);
  std::printf("%-44s %10.3f %7.1f%%\n", "DML alone (fwd+bwd)", dml, 100 * dml / step);
  return 0;
}

// The device of --device (null with a message when CUDA is asked for and absent), and the
// paper's network of --arch on it, channels-last as the trainer keeps it.
std::optional<c10::Device> bench_device(const Args& a) {
  if (a.device != "cuda") return c10::Device(c10::kCPU);
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "step_bench: --device cuda, but no CUDA device is visible\n");
    return std::nullopt;
  }
  return c10::Device(c10::kCUDA, 0);
}
M::UNet bench_network(const Args& a, c10::Device device, bool channels_last) {
  torch::manual_seed(0);
  M::UNet net(M::UNetOptions().encoder(kdseg::parse_enum<M::Encoder>("--arch", a.arch)));
  net->to(device);
  if (channels_last) M::use_channels_last(*net);
  return net;
}

int train_step(const Args& a) {
  const auto found = bench_device(a);
  if (!found) return 1;
  const c10::Device device = *found;
  const bool cuda = device.is_cuda();
  M::UNet net = bench_network(a, device, a.channels_last);
  if (cuda) at::globalContext().setBenchmarkCuDNN(true);
  kdseg::MultiTensorAdamW optimizer(net->parameters(), torch::optim::AdamWOptions(1e-4));  // the trainer's
  const at::Tensor x = torch::randn({a.batch, 1, a.size, a.size}).to(device);
  const at::Tensor y = torch::randint(0, 2, {a.batch, a.size, a.size}, torch::kLong).to(device);
  const L::SegmentationObjective objective(L::ObjectiveWeights().main(0.5).aux(0.5));
  const double cpp = median(
      [&] {
        optimizer.zero_grad();
        M::UNetOutput out;
        {
          kdseg::CudaAutocast autocast(cuda);
          out = net(x);
        }
        objective({out.logits.to(torch::kFloat), out.aux.to(torch::kFloat), y, at::Tensor(), at::Tensor()})
            .total.backward();
        optimizer.step();
        if (cuda) torch::cuda::synchronize();
      },
      a.reps);
  // Debian's python3-torch lives under /usr/bin/python3 (not a pyenv or venv interpreter);
  // KDSEG_PYTHON names another (the GPU machine's, whose torch has CUDA).
  const char* chosen = std::getenv("KDSEG_PYTHON");
  const std::string interpreter = chosen && *chosen                             ? chosen
                                  : std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3"
                                                                                : "python3";
  const std::string command = interpreter + " " + a.python + " --arch " + a.arch + " --batch " +
                              std::to_string(a.batch) + " --size " + std::to_string(a.size) + " --reps " +
                              std::to_string(a.reps) + " --threads " + std::to_string(torch::get_num_threads()) +
                              " --device " + a.device + " --channels-last " + (a.channels_last ? "1" : "0");
  double python = -1, flops = 0;
  std::string python_line;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[512];
    while (std::fgets(buffer, sizeof buffer, pipe)) python_line = buffer;
    pclose(pipe);
    const auto at = python_line.find("step ");
    if (at != std::string::npos) python = std::atof(python_line.c_str() + at + 5);
    const auto f = python_line.find("flops ");
    if (f != std::string::npos) flops = std::atof(python_line.c_str() + f + 6);
  }
  std::printf("%s, batch %lld, %lldx%lld, %s, %s, %d threads, LibTorch %s, median of %d\n", a.arch.c_str(),
              static_cast<long long>(a.batch), static_cast<long long>(a.size), static_cast<long long>(a.size),
              cuda ? "CUDA bf16 autocast" : "CPU float32", a.channels_last ? "channels-last" : "contiguous",
              torch::get_num_threads(), TORCH_VERSION, a.reps);
  if (flops > 0) std::printf("step FLOPs (forward + backward, PyTorch's counter): %.3g\n", flops);
  // Achieved TFLOP/s where the baseline's torch could count the step's FLOPs, else "-".
  const auto tflops = [&](double seconds) {
    return flops > 0 && seconds > 0 ? std::to_string(flops / seconds / 1e12).substr(0, 6) : std::string("-");
  };
  std::printf("%-40s %10s %12s %10s %8s\n", "training step", "seconds", "images/s", "TFLOP/s", "ratio");
  std::printf("%-40s %10.4f %12.2f %10s %7.3fx\n", "PyTorch eager, Python (baseline)", python,
              python > 0 ? static_cast<double>(a.batch) / python : 0.0, tflops(python).c_str(), 1.0);
  std::printf("%-40s %10.4f %12.2f %10s %7.3fx\n", "kdseg, C++", cpp, static_cast<double>(a.batch) / cpp,
              tflops(cpp).c_str(), python > 0 ? cpp / python : 0.0);
  if (python < 0) std::printf("(python baseline unavailable: %s)\n", command.c_str());
  return 0;
}

int optimizer_step(const Args& a) {
  const auto found = bench_device(a);
  if (!found) return 1;
  const c10::Device device = *found;
  const bool cuda = device.is_cuda();
  M::UNet net = bench_network(a, device, /*channels_last=*/true);
  const auto make_groups = [&] { return kdseg::unet_param_groups(*net, 1e-4, 1e-2); };
  size_t count = 0;
  for (auto& p : net->parameters()) {
    p.mutable_grad() = torch::randn_like(p);
    ++count;
  }
  torch::optim::AdamW per_parameter(make_groups(), torch::optim::AdamWOptions(1e-4));
  kdseg::MultiTensorAdamW multi_tensor(make_groups(), torch::optim::AdamWOptions(1e-4));
  const auto timed = [&](torch::optim::Optimizer& o) {
    return median(
        [&] {
          o.step();
          if (cuda) torch::cuda::synchronize();
        },
        a.reps);
  };
  const double base = timed(per_parameter), multi = timed(multi_tensor);
  // The check: two steps of fresh optimisers of each kind from the same parameters.
  const std::vector<at::Tensor> start = clones(net->parameters());
  const auto two_steps = [&](torch::optim::Optimizer&& o) {
    restore(net->parameters(), start);
    o.step();
    o.step();
    return clones(net->parameters());
  };
  const std::vector<at::Tensor> expected =
      two_steps(torch::optim::AdamW(make_groups(), torch::optim::AdamWOptions(1e-4)));
  const std::vector<at::Tensor> got =
      two_steps(kdseg::MultiTensorAdamW(make_groups(), torch::optim::AdamWOptions(1e-4)));
  kdseg::bench::ErrorCheck check(kTolerance);
  const double error = check.record(largest_error(got, expected));
  std::printf("AdamW step over %s's %zu parameter tensors, %s, %d threads, LibTorch %s, median of %d\n", a.arch.c_str(),
              count, device.str().c_str(), torch::get_num_threads(), TORCH_VERSION, a.reps);
  std::printf("%-40s %12s %8s %10s\n", "optimiser", "ms/step", "speedup", "max err");
  std::printf("%-40s %12.3f %7.2fx %10s\n", "torch::optim::AdamW (baseline)", 1e3 * base, 1.0, "-");
  std::printf("%-40s %12.3f %7.2fx %10.2g\n", "kdseg::MultiTensorAdamW", 1e3 * multi, base / multi, error);
  return check.exit_status("step_bench optimizer");
}

int sync_bn(const Args& a) {
  auto comm = D::make_communicator();
  const int64_t c = 64;
  torch::manual_seed(comm->rank());
  const at::Tensor x = torch::randn({a.batch, c, a.size, a.size}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor g = torch::randn_like(x);
  torch::nn::BatchNorm2d native(c);
  D::SyncBatchNorm2d synced(c, comm.get());
  const auto run = [&](auto& bn) {
    return median(
        [&] {
          const at::Tensor input = x.detach().requires_grad_(true);
          bn(input).backward(g);
        },
        a.reps);
  };
  const double base = run(native), ours = run(synced);
  // The check: the output against batch norm of every rank's batch together (a fresh module:
  // weight 1, bias 0, like the synced one's).
  const at::Tensor everyone = comm->all_gather(x.contiguous());
  const at::Tensor expected = torch::nn::BatchNorm2d(c)(everyone).narrow(0, comm->rank() * a.batch, a.batch);
  at::Tensor error_here = torch::tensor({kdseg::bench::relative_error(synced(x), expected)}, torch::kDouble);
  D::all_reduce_any_device(*comm, error_here, D::ReduceOp::kMax);
  kdseg::bench::ErrorCheck check(kTolerance);
  const double error = check.record(error_here.item<double>());
  if (comm->rank() == 0) {
    std::printf(
        "batch norm forward + backward, [%lld,%lld,%lld,%lld] channels-last, %d rank(s), %d threads, median of %d\n",
        static_cast<long long>(a.batch), static_cast<long long>(c), static_cast<long long>(a.size),
        static_cast<long long>(a.size), comm->size(), torch::get_num_threads(), a.reps);
    std::printf("%-44s %10s %8s %10s\n", "module", "ms", "ratio", "max err");
    std::printf("%-44s %10.2f %7.2fx %10s\n", "torch::nn::BatchNorm2d (baseline, local)", 1e3 * base, 1.0, "-");
    std::printf("%-44s %10.2f %7.2fx %10.2g\n", "kdseg SyncBatchNorm2d", 1e3 * ours, ours / base, error);
  }
  return check.exit_status("step_bench sync-bn");
}

int overlap(const Args& a) {
  D::CommunicatorOptions options;
  auto comm = D::make_communicator(options);
  const auto make = [&] {
    torch::manual_seed(0);
    return M::UNet(M::UNetOptions().encoder(kdseg::parse_enum<M::Encoder>("--arch", a.arch)).norm([&](int64_t c) {
      return torch::nn::AnyModule(D::SyncBatchNorm2d(c, comm.get()));
    }));
  };
  torch::manual_seed(comm->rank());
  const at::Tensor x = torch::randn({a.batch, 1, a.size, a.size});
  const at::Tensor y = torch::randint(0, 2, {a.batch, a.size, a.size}, torch::kLong);
  const L::SegmentationObjective objective;
  const auto run = [&](M::UNet& net, D::DataParallel* ddp) {
    net->zero_grad();
    const auto out = net(x);
    objective({out.logits, out.aux, y, at::Tensor(), at::Tensor()}).total.backward();
    if (ddp) ddp->synchronize_gradients();
  };
  M::UNet overlapped = make(), after = make();
  D::DataParallel ddp_overlap(overlapped.ptr(), *comm, D::DataParallelOptions{});
  D::DataParallelOptions no_overlap;
  no_overlap.overlap = false;
  D::DataParallel ddp_after(after.ptr(), *comm, no_overlap);
  // Interleaved so that machine noise hits both alike.
  std::vector<double> overlap_times, after_times;
  run(overlapped, &ddp_overlap);
  run(after, &ddp_after);
  for (int r = 0; r < a.reps; ++r) {
    auto t0 = Clock::now();
    run(after, &ddp_after);
    after_times.push_back(seconds_since(t0));
    t0 = Clock::now();
    run(overlapped, &ddp_overlap);
    overlap_times.push_back(seconds_since(t0));
  }
  std::sort(overlap_times.begin(), overlap_times.end());
  std::sort(after_times.begin(), after_times.end());
  const double t_overlap = overlap_times[overlap_times.size() / 2], t_after = after_times[after_times.size() / 2];
  // The check: both models start alike and ran the same steps, so one more step of each with the
  // same dropout draws gives the same reduced gradients.
  std::vector<at::Tensor> overlapped_grads, after_grads;
  torch::manual_seed(1000 + comm->rank());
  run(overlapped, &ddp_overlap);
  for (const auto& p : overlapped->parameters()) overlapped_grads.push_back(p.grad().clone());
  torch::manual_seed(1000 + comm->rank());
  run(after, &ddp_after);
  for (const auto& p : after->parameters()) after_grads.push_back(p.grad().clone());
  at::Tensor error_here = torch::tensor({largest_error(overlapped_grads, after_grads)}, torch::kDouble);
  D::all_reduce_any_device(*comm, error_here, D::ReduceOp::kMax);
  kdseg::bench::ErrorCheck check(kTolerance);
  const double error = check.record(error_here.item<double>());
  if (comm->rank() == 0) {
    std::printf("%s, %d ranks x batch %lld, %lldx%lld, %d threads per rank, %zu buckets, median of %d\n",
                a.arch.c_str(), comm->size(), static_cast<long long>(a.batch), static_cast<long long>(a.size),
                static_cast<long long>(a.size), torch::get_num_threads(), ddp_overlap.bucket_count(), a.reps);
    std::printf("%-46s %10s %8s %10s\n", "gradient reduction", "step s", "ratio", "max err");
    std::printf("%-46s %10.3f %7.3fx %10s\n", "after backward (baseline)", t_after, 1.0, "-");
    std::printf("%-46s %10.3f %7.3fx %10.2g\n", "buckets during backward (communication thread)", t_overlap,
                t_after / t_overlap, error);
  }
  return check.exit_status("step_bench overlap");
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (argc > 1) a.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--arch") a.arch = v;
    else if (k == "--batch") a.batch = std::stoll(v);
    else if (k == "--size") a.size = std::stoll(v);
    else if (k == "--reps") a.reps = std::stoi(v);
    else if (k == "--threads") a.threads = std::stoi(v);
    else if (k == "--python") a.python = v;
    else if (k == "--device") a.device = v;
    else if (k == "--channels-last") a.channels_last = v != "0";
  }
  torch::set_num_threads(a.threads > 0 ? a.threads : static_cast<int>(std::thread::hardware_concurrency()));
  if (a.mode == "loss-share") return loss_share(a);
  if (a.mode == "overlap") return overlap(a);
  if (a.mode == "train-step") return train_step(a);
  if (a.mode == "optimizer") return optimizer_step(a);
  if (a.mode == "sync-bn") return sync_bn(a);
  std::fprintf(stderr,
               "usage: step_bench loss-share|train-step|optimizer|sync-bn|overlap [--arch A] [--batch B] [--size S] "
               "[--reps R] [--threads T] [--device cpu|cuda] [--channels-last 1|0]\n");
  return 2;
}

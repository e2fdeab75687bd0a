// What the cache's storage formats cost in accuracy, on real teacher outputs: for every cached
// slice, the teacher is run again in float32 and DML of a student against its probabilities is
// compared with DML against the same probabilities read back from a logits-f16 and a probs-u8
// cache (both made by `kdseg precompute` from this teacher and store). A probs-u8 probability
// further than its rounding bound (1/510, plus float32 rounding) from the teacher's makes the
// program exit 1.
//   cache_bench <store.h5> <teacher> <logits-f16 cache> <probs-u8 cache (T = 1)>
#include <torch/torch.h>

#include <cstdio>
#include <thread>

#include "bench/bench_check.h"
#include "core/losses/dml.h"
#include "core/models/unet.h"
#include "data/loader.h"
#include "data/prepared_store.h"
#include "data/soft_label_cache.h"
#include "teacher/model_loader.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: cache_bench <store.h5> <teacher> <logits-f16 cache> <probs-u8 cache>\n");
    return 2;
  }
  namespace D = kdseg::data;
  torch::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  torch::NoGradGuard no_grad;
  const D::PreparedStore store(argv[1]);
  const D::Task task = D::make_task(D::TaskSpec{D::TaskKind::kTumour, ""},
                                    kdseg::parse_enum<D::Layout>("layout", store.attribute("layout")));
  auto teacher = kdseg::teacher::load_model(argv[2]);
  const D::SoftLabelCache f16(argv[3]), u8(argv[4]);
  torch::manual_seed(0);
  kdseg::models::UNet student(kdseg::models::UNetOptions().width(0.5));
  student->eval();
  double worst_f16 = 0, worst_u8 = 0, worst_p_u8 = 0, sum_dml = 0;
  int64_t n = 0;
  for (int64_t row : u8.store_rows()) {
    const at::Tensor image = task.window(store.image(row)).view({1, 1, store.height(), store.width()});
    const at::Tensor exact = torch::softmax(teacher->logits(image).to(torch::kFloat), 1);
    const at::Tensor logits = student(image).logits;
    const double reference = kdseg::losses::dml_loss(logits, exact).item<double>();
    const double from_f16 = kdseg::losses::dml_loss(logits, f16.probabilities(row, 1.0).unsqueeze(0)).item<double>();
    const at::Tensor p_u8 = u8.probabilities(row, 0).unsqueeze(0);
    const double from_u8 = kdseg::losses::dml_loss(logits, p_u8).item<double>();
    worst_f16 = std::max(worst_f16, std::abs(from_f16 - reference));
    worst_u8 = std::max(worst_u8, std::abs(from_u8 - reference));
    worst_p_u8 = std::max(worst_p_u8, (p_u8 - exact).abs().max().item<double>());
    sum_dml += reference;
    ++n;
  }
  std::printf("%lld slices, mean DML against float32 teacher probabilities %.4f\n", static_cast<long long>(n),
              sum_dml / static_cast<double>(n));
  std::printf(
      "largest |DML difference|: logits-f16 %.2e, probs-u8 %.2e (largest probability error of probs-u8 %.2e, bound "
      "1/510 = %.2e)\n",
      worst_f16, worst_u8, worst_p_u8, 1.0 / 510);
  kdseg::bench::ErrorCheck check(1.0 / 510 + 1e-6);
  check.record(worst_p_u8);
  return check.exit_status("cache_bench");
}

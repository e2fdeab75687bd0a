#include "dist/autograd_collectives.h"

#include <torch/torch.h>

#include "core/error.h"

namespace kdseg::dist {
namespace {
using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Communicator* comm_of(AutogradContext* ctx) { return reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt()); }

class AllReduceSum : public torch::autograd::Function<AllReduceSum> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    Tensor out = input.detach().clone(at::MemoryFormat::Contiguous);
    reinterpret_cast<Communicator*>(comm)->all_reduce(out, ReduceOp::kSum);
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor grad = grads[0].contiguous().clone();
    comm_of(ctx)->all_reduce(grad, ReduceOp::kSum);
    return {grad, Tensor()};
  }
};

class AllGather : public torch::autograd::Function<AllGather> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& input, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    ctx->saved_data["rows"] = input.size(0);
    return reinterpret_cast<Communicator*>(comm)->all_gather(input.detach().contiguous());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Communicator* comm = comm_of(ctx);
    const int64_t rows = ctx->saved_data["rows"].toInt();
    Tensor grad = grads[0].contiguous().clone();
    comm->all_reduce(grad, ReduceOp::kSum);
    return {grad.narrow(0, comm->rank() * rows, rows).clone(), Tensor()};
  }
};

int64_t handle(Communicator& comm) { return static_cast<int64_t>(reinterpret_cast<intptr_t>(&comm)); }

}  // namespace

Tensor all_reduce_sum_with_grad(const Tensor& tensor, Communicator& comm) {
  if (comm.size() == 1) return tensor;
  return AllReduceSum::apply(tensor, handle(comm));
}

Tensor all_gather_with_grad(const Tensor& tensor, Communicator& comm) {
  KDSEG_CHECK(tensor.dim() >= 1, "all_gather_with_grad: needs at least one dimension");
  if (comm.size() == 1) return tensor;
  return AllGather::apply(tensor, handle(comm));
}

losses::DmlStatisticsReducer global_batch_dml_reducer(Communicator& comm, const losses::DmlOptions& options) {
  const bool batch_sums_suffice = options.image_weight() == 0 && options.class_weight() == 0;
  return [&comm, batch_sums_suffice](const losses::DmlStatistics& local) {
    if (comm.size() == 1) return local;
    const losses::DmlStatistics s = batch_sums_suffice ? local.summed_over_batch() : local;
    const int64_t classes = s.tp.size(1);
    // tp, fp, fn in one collective; the target maxima (no gradient, another operation) in a
    // second, small one.
    const Tensor packed = torch::cat({s.tp, s.fp, s.fn}, 1);
    const Tensor reduced =
        batch_sums_suffice ? all_reduce_sum_with_grad(packed, comm) : all_gather_with_grad(packed, comm);
    Tensor target_max = s.target_max.detach().contiguous().clone();
    if (batch_sums_suffice) comm.all_reduce(target_max, ReduceOp::kMax);
    else target_max = comm.all_gather(target_max);
    losses::DmlStatistics out;
    out.tp = reduced.narrow(1, 0, classes);
    out.fp = reduced.narrow(1, classes, classes);
    out.fn = reduced.narrow(1, 2 * classes, classes);
    out.target_max = target_max;
    out.hard_target = s.hard_target;
    return out;
  };
}

losses::GlobalBatch global_batch(Communicator& comm, const losses::DmlOptions& options) {
  losses::GlobalBatch global;
  if (comm.size() == 1) return global;
  global.dml_statistics = global_batch_dml_reducer(comm, options);
  global.sum_over_ranks = [&comm](const Tensor& counts) {
    Tensor summed = counts.detach().clone();
    all_reduce_any_device(comm, summed, ReduceOp::kSum);
    return summed;
  };
  global.ranks = comm.size();
  return global;
}

}  // namespace kdseg::dist

#include "core/adamw.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>

#include "core/error.h"
#include "core/models/unet.h"

namespace kdseg {

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& parameters, double max_norm) {
  KDSEG_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be > 0, got ", max_norm);
  std::vector<at::Tensor> grads, norms;
  for (const at::Tensor& p : parameters) {
    if (!p.grad().defined()) continue;
    grads.push_back(p.grad());
    norms.push_back(p.grad().detach().norm(2).to(at::kFloat));
  }
  if (grads.empty()) return torch::zeros({});
  const at::Tensor total = at::stack(norms).norm(2);
  const at::Tensor scale = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (at::Tensor& g : grads) g.detach().mul_(scale.to(g.scalar_type()));
  return total;
}

namespace {

// The optimiser state's key of a parameter: LibTorch 1.x keys by the TensorImpl address as a
// string, 2.x by the address itself.
template <typename Key>
Key state_key(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream text;
    text << p.unsafeGetTensorImpl();
    return text.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

constexpr const char* kFormat = "kdseg adamw 1";

// The tensors of one update: parameters that share a step count (so the same bias corrections).
struct Lists {
  std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs;
};

}  // namespace

at::Tensor MultiTensorAdamW::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  at::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  using Key = typename std::decay_t<decltype(state_)>::key_type;
  for (auto& group : param_groups_) {
    auto& options = static_cast<torch::optim::AdamWOptions&>(group.options());
    TORCH_CHECK(!options.amsgrad(), "MultiTensorAdamW: amsgrad is not supported; use torch::optim::AdamW");
    const double lr = options.lr(), beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
    std::map<int64_t, Lists> by_step;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      TORCH_CHECK(!p.grad().is_sparse(), "MultiTensorAdamW does not support sparse gradients");
      auto& slot = state_[state_key<Key>(p)];
      if (!slot) {
        auto fresh = std::make_unique<torch::optim::AdamWParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, at::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, at::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& state = static_cast<torch::optim::AdamWParamState&>(*slot);
      state.step(state.step() + 1);
      Lists& lists = by_step[state.step()];
      lists.params.push_back(p);
      lists.grads.push_back(p.grad());
      lists.exp_avgs.push_back(state.exp_avg());
      lists.exp_avg_sqs.push_back(state.exp_avg_sq());
    }
    for (auto& [step, l] : by_step) {
      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
      if (options.weight_decay() != 0) at::_foreach_mul_(l.params, 1 - lr * options.weight_decay());
      at::_foreach_mul_(l.exp_avgs, beta1);
      at::_foreach_add_(l.exp_avgs, l.grads, 1 - beta1);
      at::_foreach_mul_(l.exp_avg_sqs, beta2);
      at::_foreach_addcmul_(l.exp_avg_sqs, l.grads, l.grads, 1 - beta2);
      std::vector<at::Tensor> denom = at::_foreach_sqrt(l.exp_avg_sqs);
      at::_foreach_div_(denom, std::sqrt(bias_correction2));
      at::_foreach_add_(denom, options.eps());
      at::_foreach_addcdiv_(l.params, l.exp_avgs, denom, -lr / bias_correction1);
    }
  }
  return loss;
}

void MultiTensorAdamW::save(torch::serialize::OutputArchive& archive) const {
  using Key = typename std::decay_t<decltype(state_)>::key_type;
  archive.write("kdseg_format", c10::IValue(std::string(kFormat)));
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    const auto& group = param_groups_[g];
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
    torch::serialize::OutputArchive out;
    out.write("lr", c10::IValue(o.lr()));
    out.write("beta1", c10::IValue(std::get<0>(o.betas())));
    out.write("beta2", c10::IValue(std::get<1>(o.betas())));
    out.write("eps", c10::IValue(o.eps()));
    out.write("weight_decay", c10::IValue(o.weight_decay()));
    out.write("params", c10::IValue(static_cast<int64_t>(group.params().size())));
    for (size_t j = 0; j < group.params().size(); ++j) {
      const auto it = state_.find(state_key<Key>(group.params()[j]));
      if (it == state_.end()) continue;  // never stepped
      const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
      torch::serialize::OutputArchive state;
      state.write("step", c10::IValue(s.step()));
      state.write("exp_avg", s.exp_avg());
      state.write("exp_avg_sq", s.exp_avg_sq());
      out.write(std::to_string(j), state);
    }
    archive.write("group" + std::to_string(g), out);
  }
}

void MultiTensorAdamW::load(torch::serialize::InputArchive& archive) {
  c10::IValue format;
  if (!archive.try_read("kdseg_format", format)) {
    torch::optim::AdamW::load(archive);  // LibTorch's layout
    return;
  }
  KDSEG_CHECK(format.isString() && format.toStringRef() == kFormat, "optimizer state: unknown format ",
              format.isString() ? format.toStringRef() : std::string("?"), " (expected ", kFormat, ")");
  torch::serialize::InputArchive extra;
  KDSEG_CHECK(!archive.try_read("group" + std::to_string(param_groups_.size()), extra), "optimizer state: more than ",
              param_groups_.size(), " parameter groups");
  using Key = typename std::decay_t<decltype(state_)>::key_type;
  decltype(state_) loaded;
  for (size_t g = 0; g < param_groups_.size(); ++g) {
    auto& group = param_groups_[g];
    torch::serialize::InputArchive in;
    KDSEG_CHECK(archive.try_read("group" + std::to_string(g), in), "optimizer state: ", g,
                " parameter group(s), but this optimiser has ", param_groups_.size());
    c10::IValue count, lr, beta1, beta2, eps, weight_decay;
    in.read("params", count);
    KDSEG_CHECK(count.toInt() == static_cast<int64_t>(group.params().size()), "optimizer state: group ", g, " has ",
                count.toInt(), " parameters, but this optimiser's has ", group.params().size());
    in.read("lr", lr);
    in.read("beta1", beta1);
    in.read("beta2", beta2);
    in.read("eps", eps);
    in.read("weight_decay", weight_decay);
    auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
    o.lr(lr.toDouble())
        .betas({beta1.toDouble(), beta2.toDouble()})
        .eps(eps.toDouble())
        .weight_decay(weight_decay.toDouble());
    for (size_t j = 0; j < group.params().size(); ++j) {
      torch::serialize::InputArchive state;
      if (!in.try_read(std::to_string(j), state)) continue;
      const at::Tensor& p = group.params()[j];
      c10::IValue step;
      at::Tensor exp_avg, exp_avg_sq;
      state.read("step", step);
      state.read("exp_avg", exp_avg);
      state.read("exp_avg_sq", exp_avg_sq);
      KDSEG_CHECK(exp_avg.sizes() == p.sizes() && exp_avg_sq.sizes() == p.sizes(), "optimizer state: group ", g,
                  " parameter ", j, " has moments of shape ", exp_avg.sizes(), " for a parameter of shape ", p.sizes());
      auto s = std::make_unique<torch::optim::AdamWParamState>();
      s->step(step.toInt());
      s->exp_avg(exp_avg.to(p.device()).contiguous(p.suggest_memory_format()));
      s->exp_avg_sq(exp_avg_sq.to(p.device()).contiguous(p.suggest_memory_format()));
      loaded[state_key<Key>(p)] = std::move(s);
    }
  }
  state_ = std::move(loaded);
}

std::vector<torch::optim::OptimizerParamGroup> unet_param_groups(models::UNetImpl& net, double lr,
                                                                 double weight_decay) {
  std::vector<at::Tensor> groups[4];
  for (const auto& p : net.encoder_parameters()) groups[p.dim() <= 1 ? 1 : 0].push_back(p);
  for (const auto& p : net.decoder_parameters()) groups[p.dim() <= 1 ? 3 : 2].push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> out;
  for (int g = 0; g < 4; ++g) {
    auto options = std::make_unique<torch::optim::AdamWOptions>(unet_group_lr(g, lr));
    options->weight_decay(g % 2 == 0 ? weight_decay : 0.0);
    out.emplace_back(groups[g], std::move(options));
  }
  return out;
}

}  // namespace kdseg

#include "core/models/unet.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace kdseg::models {
namespace {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

int64_t scaled(int64_t channels, double width) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(channels) * width)));
}

nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}
nn::Conv2d conv1x1(int64_t in, int64_t out) { return nn::Conv2d(nn::Conv2dOptions(in, out, 1).bias(false)); }

// A ResNet block: basic (two 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1 x4), with the
// "d" shortcut (average pool with the stride, then 1x1 conv and norm) when the shape changes.
class BlockImpl : public nn::Module {
 public:
  BlockImpl(int64_t in, int64_t planes, int64_t stride, bool bottleneck, const NormFactory& norm)
      : bottleneck_(bottleneck) {
    const int64_t out = bottleneck ? planes * 4 : planes;
    if (bottleneck) {
      conv1_ = register_module("conv1", conv1x1(in, planes));
      bn1_ = add_norm("bn1", norm(planes));
      conv2_ = register_module("conv2", conv3x3(planes, planes, stride));
      bn2_ = add_norm("bn2", norm(planes));
      conv3_ = register_module("conv3", conv1x1(planes, out));
      bn3_ = add_norm("bn3", norm(out));
    } else {
      conv1_ = register_module("conv1", conv3x3(in, planes, stride));
      bn1_ = add_norm("bn1", norm(planes));
      conv2_ = register_module("conv2", conv3x3(planes, planes));
      bn2_ = add_norm("bn2", norm(planes));
    }
    if (stride != 1 || in != out) {
      downsample_ = nn::Sequential();
      if (stride > 1) {
        downsample_->push_back(
            nn::AvgPool2d(nn::AvgPool2dOptions(2).stride(stride).ceil_mode(true).count_include_pad(false)));
      } else {
        downsample_->push_back(nn::Identity());
      }
      downsample_->push_back(conv1x1(in, out));
      downsample_->push_back(norm(out));
      register_module("downsample", downsample_);
    }
  }

  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = torch::relu(bn1_.forward(conv1_(x)));
    h = bn2_.forward(conv2_(h));
    if (bottleneck_) h = bn3_.forward(conv3_(torch::relu(h)));
    const at::Tensor shortcut = downsample_ ? downsample_->forward(x) : x;
    return torch::relu(h + shortcut);
  }

 private:
  nn::AnyModule add_norm(const std::string& name, nn::AnyModule module) {
    register_module(name, module.ptr());
    return module;
  }

  bool bottleneck_;
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  nn::AnyModule bn1_, bn2_, bn3_;
  nn::Sequential downsample_{nullptr};
};
TORCH_MODULE(Block);

struct EncoderSpec {
  std::vector<int64_t> blocks;
  bool bottleneck;
};
EncoderSpec spec_of(Encoder encoder) {
  switch (encoder) {
    case Encoder::kResNet18d: return {{2, 2, 2, 2}, false};
    case Encoder::kResNet34d: return {{3, 4, 6, 3}, false};
    case Encoder::kResNet50d: return {{3, 4, 6, 3}, true};
  }
  return {{2, 2, 2, 2}, false};
}

// The ResNet-d encoder; forward returns the features at strides 2, 4, 8, 16, 32.
class ResNetEncoderImpl : public nn::Module {
 public:
  ResNetEncoderImpl(const UNetOptions& o) {
    const double w = o.width();
    const int64_t stem_mid = scaled(32, w), stem_out = scaled(64, w);
    conv1_ = register_module("conv1", nn::Sequential(conv3x3(o.in_channels(), stem_mid, 2), o.norm()(stem_mid),
                                                     nn::ReLU(), conv3x3(stem_mid, stem_mid), o.norm()(stem_mid),
                                                     nn::ReLU(), conv3x3(stem_mid, stem_out)));
    bn1_ = o.norm()(stem_out);
    register_module("bn1", bn1_.ptr());
    const EncoderSpec spec = spec_of(o.encoder());
    channels_ = {stem_out};
    int64_t in = stem_out;
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t planes = scaled(64 << stage, w);
      nn::Sequential layer;
      for (int64_t b = 0; b < spec.blocks[static_cast<size_t>(stage)]; ++b) {
        const int64_t stride = b == 0 && stage > 0 ? 2 : 1;
        layer->push_back(Block(in, planes, stride, spec.bottleneck, o.norm()));
        in = spec.bottleneck ? planes * 4 : planes;
      }
      layers_.push_back(register_module("layer" + std::to_string(stage + 1), layer));
      channels_.push_back(in);
    }
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* conv = m->as<nn::Conv2d>()) {
        nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      }
    }
  }

  std::vector<at::Tensor> forward(const at::Tensor& x) {
    std::vector<at::Tensor> features;
    at::Tensor h = torch::relu(bn1_.forward(conv1_->forward(x)));
    features.push_back(h);
    h = F::max_pool2d(h, F::MaxPool2dFuncOptions(3).stride(2).padding(1));
    for (auto& layer : layers_) {
      h = layer->forward(h);
      features.push_back(h);
    }
    return features;
  }

  const std::vector<int64_t>& channels() const { return channels_; }

 private:
  nn::Sequential conv1_{nullptr};
  nn::AnyModule bn1_;
  std::vector<nn::Sequential> layers_;
  std::vector<int64_t> channels_;
};

nn::Sequential decoder_block(int64_t in, int64_t out, const NormFactory& norm) {
  return nn::Sequential(conv3x3(in, out), norm(out), nn::ReLU(), conv3x3(out, out), norm(out), nn::ReLU());
}

at::Tensor resize_to(const at::Tensor& x, at::IntArrayRef size) {
  if (x.sizes().slice(2) == size) return x;
  return F::interpolate(x, F::InterpolateFuncOptions().size(size.vec()).mode(torch::kBilinear).align_corners(false));
}

}  // namespace

NormFactory batch_norm_factory() {
  return [](int64_t channels) { return nn::AnyModule(nn::BatchNorm2d(channels)); };
}

bool channels_last_is_faster(c10::Device device) {
  if (device.is_cuda()) return true;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  return __builtin_cpu_supports("avx512f");
#else
  return false;  // measured only on x86; contiguous is LibTorch's default elsewhere
#endif
}

void use_channels_last(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  }
}

UNetImpl::UNetImpl(UNetOptions options) : options_(std::move(options)) {
  const UNetOptions& o = options_;
  KDSEG_CHECK(o.classes() >= 2 && o.in_channels() >= 1 && o.width() > 0, "UNet: classes ", o.classes(),
              ", input channels ", o.in_channels(), " and width ", o.width(), " must be positive (classes >= 2)");
  auto encoder = std::make_shared<ResNetEncoderImpl>(o);
  encoder_ = register_module("encoder", encoder);
  const std::vector<int64_t>& skip = encoder->channels();  // strides 2, 4, 8, 16, 32
  const bool large = o.encoder() == Encoder::kResNet50d;
  const int64_t out = scaled(large ? 64 : 16, o.width());
  const std::vector<int64_t> widths{out * 16, out * 8, out * 4, out * 2, out};
  decoder_ = register_module("decoder", nn::ModuleList());
  int64_t in = skip[4];
  for (size_t i = 0; i < widths.size(); ++i) {
    const int64_t with_skip = in + (i < 4 ? skip[3 - i] : 0);
    decoder_->push_back(decoder_block(with_skip, widths[i], o.norm()));
    in = widths[i];
  }
  head_ = register_module(
      "head", nn::Sequential(nn::Dropout2d(o.dropout()), nn::Conv2d(nn::Conv2dOptions(out, o.classes(), 1))));
  if (o.aux_head()) {
    const int64_t hidden = scaled(large ? 256 : 64, o.width());
    aux_ = register_module(
        "aux_head", nn::Sequential(conv3x3(skip[3], hidden), o.norm()(hidden), nn::ReLU(), nn::Dropout2d(o.dropout()),
                                   nn::Conv2d(nn::Conv2dOptions(hidden, o.classes(), 1))));
  }
  // The reference initialises the decoder Kaiming-uniform and the heads Xavier-uniform.
  for (auto& m : decoder_->modules(false)) {
    if (auto* conv = m->as<nn::Conv2d>()) nn::init::kaiming_uniform_(conv->weight, 0.0, torch::kFanIn, torch::kReLU);
  }
  for (auto* seq : {&head_, &aux_}) {
    if (!*seq) continue;
    for (auto& m : (*seq)->modules(false)) {
      if (auto* conv = m->as<nn::Conv2d>()) {
        nn::init::xavier_uniform_(conv->weight);
        if (conv->bias.defined()) nn::init::zeros_(conv->bias);
      }
    }
  }
}

UNetOutput UNetImpl::forward(const at::Tensor& x) {
  KDSEG_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels(), "UNet: expected input [B,", options_.in_channels(),
              ",H,W], got ", x.sizes());
  auto* encoder = static_cast<ResNetEncoderImpl*>(encoder_.get());
  const std::vector<at::Tensor> features = encoder->forward(x);
  at::Tensor d = features[4];
  for (size_t i = 0; i < 5; ++i) {
    if (i < 4) {
      const at::Tensor& skip = features[3 - i];
      d = torch::cat({resize_to(d, skip.sizes().slice(2)), skip}, 1);
    } else {
      d = resize_to(d, std::vector<int64_t>{d.size(2) * 2, d.size(3) * 2});
    }
    d = decoder_[i]->as<nn::Sequential>()->forward(d);
  }
  UNetOutput out;
  out.logits = resize_to(head_->forward(d), x.sizes().slice(2));
  if (aux_) out.aux = resize_to(aux_->forward(features[3]), x.sizes().slice(2));
  return out;
}

std::vector<at::Tensor> UNetImpl::encoder_parameters() const { return encoder_->parameters(); }

std::vector<at::Tensor> UNetImpl::decoder_parameters() const {
  std::vector<at::Tensor> out = decoder_->parameters();
  for (const auto& p : head_->parameters()) out.push_back(p);
  if (aux_) {
    for (const auto& p : aux_->parameters()) out.push_back(p);
  }
  return out;
}

}  // namespace kdseg::models

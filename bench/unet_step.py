#!/usr/bin/env python3
"""The paper's UNet in PyTorch eager, for bench/step_bench's C++/Python comparison.

    python3 bench/unet_step.py [--arch unet-resnet18d] [--batch 8] [--size 384] [--reps 3] [--threads 2]
                               [--device cpu|cuda] [--channels-last 1|0]

The same network as core/models/unet.cpp (ResNet-d encoder, five decoder blocks, auxiliary head;
its parameter count is checked against ../shared/MODELS.md) and the same objective weights
(0.25 CE + 0.75 DML on the main head, CE on the auxiliary head), timed forward+backward+AdamW
step like `step_bench train-step`. It runs as kdseg's trainer does: channels-last (unless
--channels-last 0), and on CUDA bf16 autocast and cuDNN autotuning; it reports the step's FLOPs
(torch.utils.flop_counter, where this torch has it). Needs only torch (Debian's python3-torch on CPU).
"""
import argparse
import contextlib
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

COUNTS = {"unet-resnet18d": 14494468, "unet-resnet34d": 24602628, "unet-resnet50d": 76066980}


def conv3x3(i, o, s=1):
    return nn.Conv2d(i, o, 3, s, 1, bias=False)


class Block(nn.Module):
    def __init__(self, i, planes, stride, bottleneck):
        super().__init__()
        out = planes * 4 if bottleneck else planes
        self.bottleneck = bottleneck
        if bottleneck:
            self.conv1, self.bn1 = nn.Conv2d(i, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        else:
            self.conv1, self.bn1 = conv3x3(i, planes, stride), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or i != out:
            pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, nn.Conv2d(i, out, 1, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        if self.bottleneck:
            h = self.bn3(self.conv3(F.relu(h)))
        return F.relu(h + (self.downsample(x) if self.downsample is not None else x))


class UNet(nn.Module):
    def __init__(self, arch, classes=2):
        super().__init__()
        blocks = {"unet-resnet18d": [2, 2, 2, 2], "unet-resnet34d": [3, 4, 6, 3], "unet-resnet50d": [3, 4, 6, 3]}[arch]
        bottleneck = arch == "unet-resnet50d"
        self.conv1 = nn.Sequential(conv3x3(1, 32, 2), nn.BatchNorm2d(32), nn.ReLU(), conv3x3(32, 32), nn.BatchNorm2d(32),
                                   nn.ReLU(), conv3x3(32, 64))
        self.bn1 = nn.BatchNorm2d(64)
        layers, channels, i = [], [64], 64
        for stage in range(4):
            planes = 64 << stage
            seq = []
            for b in range(blocks[stage]):
                seq.append(Block(i, planes, 2 if b == 0 and stage > 0 else 1, bottleneck))
                i = planes * 4 if bottleneck else planes
            layers.append(nn.Sequential(*seq))
            channels.append(i)
        self.layers = nn.ModuleList(layers)
        out = 64 if bottleneck else 16
        widths = [out * 16, out * 8, out * 4, out * 2, out]
        self.decoder = nn.ModuleList()
        i = channels[4]
        for k, w in enumerate(widths):
            skip = channels[3 - k] if k < 4 else 0
            self.decoder.append(nn.Sequential(conv3x3(i + skip, w), nn.BatchNorm2d(w), nn.ReLU(), conv3x3(w, w),
                                              nn.BatchNorm2d(w), nn.ReLU()))
            i = w
        self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(out, classes, 1))
        hidden = 256 if bottleneck else 64
        self.aux = nn.Sequential(conv3x3(channels[3], hidden), nn.BatchNorm2d(hidden), nn.ReLU(), nn.Dropout2d(0.1),
                                 nn.Conv2d(hidden, classes, 1))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        feats = [h]
        h = F.max_pool2d(h, 3, 2, 1)
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        d = feats[4]
        for k, block in enumerate(self.decoder):
            if k < 4:
                skip = feats[3 - k]
                d = torch.cat([F.interpolate(d, size=skip.shape[2:], mode="bilinear", align_corners=False), skip], 1)
            else:
                d = F.interpolate(d, scale_factor=2, mode="bilinear", align_corners=False)
            d = block(d)
        size = x.shape[2:]
        return (F.interpolate(self.head(d), size=size, mode="bilinear", align_corners=False),
                F.interpolate(self.aux(feats[3]), size=size, mode="bilinear", align_corners=False))


def dml(logits, labels, smooth=1.0):
    """DML1 over the batch, PRESENT classes, written as the reference does."""
    b, c = logits.shape[:2]
    prob = logits.view(b, c, -1).log_softmax(1).exp()
    label = F.one_hot(labels.view(b, -1), c).permute(0, 2, 1).float()
    pc, lc, dc = prob.norm(1, 2), label.norm(1, 2), (prob - label).norm(1, 2)
    tp = ((pc + lc - dc) / 2).sum(0)
    fp, fn = pc.sum(0) - tp, lc.sum(0) - tp
    dice = (tp + smooth) / (tp + 0.5 * fp + 0.5 * fn + smooth)
    active = label.amax((0, 2)) > 0.01
    return (1 - dice)[active].mean()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="unet-resnet18d")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--channels-last", type=int, default=1)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = a.device == "cuda"
    torch.manual_seed(0)
    net = UNet(a.arch)
    count = sum(t.numel() for t in net.parameters())
    assert count == COUNTS[a.arch], f"{a.arch}: {count} parameters, expected {COUNTS[a.arch]}"
    if cuda:
        torch.backends.cudnn.benchmark = True
        net = net.cuda()
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(a.batch, 1, a.size, a.size, device=a.device)
    y = torch.randint(0, 2, (a.batch, a.size, a.size), device=a.device)

    def step():
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
            z, aux = net(x)
        z, aux = z.float(), aux.float()
        loss = 0.25 * (0.5 * F.cross_entropy(z, y) + 0.5 * F.cross_entropy(aux, y)) + 0.75 * dml(z, y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    step()
    flops = 0
    try:
        from torch.utils.flop_counter import FlopCounterMode
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()
    except ImportError:  # torch < 2.1
        pass
    times = []
    for _ in range(a.reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    print(f"python {a.arch} batch {a.batch} {a.size}x{a.size} threads {torch.get_num_threads()} "
          f"torch {torch.__version__} {a.device}: flops {flops} step {times[len(times) // 2]:.5f} s")


if __name__ == "__main__":
    main()

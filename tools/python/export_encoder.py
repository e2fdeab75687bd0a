#!/usr/bin/env python3
"""Exports ImageNet ResNet weights for kdseg's UNet encoders.

    python3 export_encoder.py timm resnet50d resnet50d.pt        # the paper's teacher encoder
    python3 export_encoder.py timm resnet18d resnet18d.pt        # the student's
    python3 export_encoder.py torchvision resnet50 resnet50.pt   # residual stages only

Writes torch.save({name: tensor, ..., "__source__": "timm:resnet50d"}), which kdseg reads with
load_pretrained_encoder (core/models/pretrained.h): timm ResNet-d weights map one to one (the
first convolution is summed over its RGB channels for kdseg's 1-channel input, as timm does for
in_chans=1); torchvision ResNets have a different stem, so only their four stages are used.
Needs torch and timm or torchvision (pip), run wherever they are installed.
"""
import sys

import torch


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in ("timm", "torchvision"):
        sys.exit(__doc__)
    library, name, output = sys.argv[1:]
    if library == "timm":
        import timm

        model = timm.create_model(name, pretrained=True)
    else:
        import torchvision

        model = getattr(torchvision.models, name)(weights="IMAGENET1K_V1")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    state["__source__"] = f"{library}:{name}"
    torch.save(state, output)
    print(f"wrote {len(state) - 1} tensors of {library}:{name} to {output}")


if __name__ == "__main__":
    main()

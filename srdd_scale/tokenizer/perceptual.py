"""Optional VGG16 perceptual loss from user-supplied local weights (nothing is ever downloaded)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

# Last layer index (inclusive) of each VGG16 stage in torchvision's `features`: relu1_2 ... relu5_3.
STAGE_ENDS = (3, 8, 15, 22, 29)
STAGE_WIDTHS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _load(path: str, what: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} weights not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


class PerceptualLoss(nn.Module):
    """LPIPS-style distance: unit-normalised VGG16 features, squared differences, spatial mean, summed over stages.

    `vgg_path` is torchvision's VGG16 state dict (`features.N.*` keys; classifier keys are ignored).
    `lpips_path`, if given, holds LPIPS' per-channel linear heads (`lin{k}.model.1.weight`, shape (1, C, 1, 1));
    without it every channel weighs the same.
    """

    def __init__(self, vgg_path: str, lpips_path: str | None = None):
        super().__init__()
        state = _load(vgg_path, "VGG16")
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        net = make_layers(cfgs["D"])[: STAGE_ENDS[-1] + 1]  # VGG16's conv stack only: no classifier to build
        missing, unexpected = net.load_state_dict(features, strict=False)
        if missing:
            raise ValueError(f"{vgg_path}: not a torchvision VGG16 state dict; missing features.{missing[0]} "
                             f"and {len(missing) - 1} more")
        self.features = net.eval().requires_grad_(False)
        heads = [torch.ones(1, c, 1, 1) for c in STAGE_WIDTHS]
        if lpips_path:
            lin = _load(lpips_path, "LPIPS")
            keys = [f"lin{k}.model.1.weight" for k in range(len(STAGE_WIDTHS))]
            absent = [k for k in keys if k not in lin]
            if absent:
                raise ValueError(f"{lpips_path}: not LPIPS VGG heads; missing keys {absent}")
            heads = [lin[k].float() for k in keys]
        for k, head in enumerate(heads):
            self.register_buffer(f"head{k}", head)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def _stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        h = ((images + 1) / 2 - self.mean) / self.std
        outputs, start = [], 0
        for end in STAGE_ENDS:
            h = self.features[start: end + 1](h)
            outputs.append(F.normalize(h, dim=1, eps=1e-10))
            start = end + 1
        return outputs

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = reconstruction.new_zeros(())
        for k, (a, b) in enumerate(zip(self._stages(reconstruction), self._stages(target))):
            total = total + ((a - b).square() * getattr(self, f"head{k}")).sum(1).mean()
        return total

"""The optional perceptual loss loads local VGG16 (+ LPIPS head) weights and measures feature distance."""
import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from srdd_scale.tokenizer.perceptual import STAGE_WIDTHS, PerceptualLoss


@pytest.fixture(scope="module")
def vgg_path(tmp_path_factory):
    torch.manual_seed(0)
    features = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(features, path)
    return path


def test_perceptual_loss_zero_on_equal_images_and_differentiable(vgg_path, tmp_path):
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(STAGE_WIDTHS)}
    torch.save(heads, tmp_path / "lpips_vgg.pth")
    loss = PerceptualLoss(str(vgg_path), str(tmp_path / "lpips_vgg.pth"))
    assert not any(p.requires_grad for p in loss.parameters())
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    reconstruction = (target + 0.3 * torch.randn(target.shape, generator=generator)).requires_grad_(True)
    value = loss(reconstruction, target)
    value.backward()
    assert value.item() > 0 and reconstruction.grad.abs().sum() > 0


def test_perceptual_loss_errors_name_the_file(vgg_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="VGG16 weights not found: .*nope.pth"):
        PerceptualLoss(str(tmp_path / "nope.pth"))
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"not LPIPS VGG heads; missing keys \['lin1.model.1.weight'"):
        PerceptualLoss(str(vgg_path), str(tmp_path / "partial.pth"))

"""The per-SKU peak table: driver names as torch reports them map to the right row; unknown names warn."""

import logging

import pytest

from srdd_scale.train.callbacks.hardware import DEVICE_SKUS, find_sku, peak_flops_for_name

# (name torch.cuda.get_device_name returns, expected row, dense bf16 TFLOP/s)
DRIVER_NAMES = [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.5),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.5),
    ("NVIDIA H100 NVL", "H100 NVL", 835.5),
    ("NVIDIA H200", "H200 SXM", 989),
    ("NVIDIA H200 NVL", "H200 NVL", 835.5),
    ("NVIDIA H20", "H20", 148),
    ("NVIDIA GH200 480GB", "GH200", 989),
    ("NVIDIA B200", "B200", 2250),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM", 312),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB SXM", 312),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB PCIe", 312),
    ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe", 312),
    ("NVIDIA L40S", "L40S", 362.05),
    ("NVIDIA L4", "L4", 121),
    ("NVIDIA A10G", "A10G", 125),
    ("NVIDIA A10", "A10", 125),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 165.2),
    ("AMD Instinct MI300X", "MI300X", 1307.4),
]


@pytest.mark.parametrize("name, label, bf16_tflops", DRIVER_NAMES)
def test_driver_name_maps_to_most_specific_row(name, label, bf16_tflops):
    sku = find_sku(name)
    assert sku is not None and sku.label == label
    assert peak_flops_for_name(name, "bf16") == pytest.approx(bf16_tflops * 1e12)
    assert peak_flops_for_name(name, "fp16") == peak_flops_for_name(name, "bf16")
    assert peak_flops_for_name(name, "fp32") == sku.fp32 < sku.bf16


def test_every_row_is_reached_by_some_driver_name():
    assert {label for _, label, _ in DRIVER_NAMES} == {sku.label for sku in DEVICE_SKUS}


@pytest.mark.parametrize("name", ["NVIDIA L40", "Tesla V100-SXM2-16GB", "AMD Instinct MI250X", "NVIDIA H800"])
def test_unknown_device_warns_and_gives_no_peak(name, caplog):
    with caplog.at_level(logging.WARNING):
        assert peak_flops_for_name(name, "bf16") is None
    assert name in caplog.text and "MFU is not reported" in caplog.text

"""Peak FLOP/s of accelerators by device name, the denominator of MFU; unknown devices get no MFU, not an error."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from srdd_scale.utils.logging import get_logger

log = get_logger("srdd_scale.train.hardware")


@dataclass(frozen=True)
class DeviceSku:
    """One product: the regex its driver name matches, and its dense (no 2:4 sparsity) peaks in FLOP/s."""

    label: str
    pattern: str  # searched in torch.cuda.get_device_name(); \b keeps 'L4' off 'L40S' and 'H200' off 'GH200'
    bf16: float  # tensor cores, fp32 accumulate; fp16 has the same peak on every SKU listed
    fp32: float  # non-tensor fp32 (what an fp32 run without TF32 can reach)


# Most specific first: the first pattern that matches wins. Figures are the vendor datasheets' dense numbers
# (the datasheets print the 2:4-sparse figure, twice these, next to them).
DEVICE_SKUS: tuple[DeviceSku, ...] = (
    # NVIDIA GH200 Grace Hopper Superchip datasheet: H100 SXM compute (1979 TF bf16 sparse), 67 TF fp32
    DeviceSku("GH200", r"\bGH200\b", 989e12, 67e12),
    # NVIDIA H200 Tensor Core GPU datasheet, NVL column: 1671 TF bf16 sparse, 60 TF fp32
    DeviceSku("H200 NVL", r"\bH200\b.*\bNVL\b", 835.5e12, 60e12),
    # NVIDIA H200 datasheet, SXM column: 1979 TF bf16 sparse, 67 TF fp32
    DeviceSku("H200 SXM", r"\bH200\b", 989e12, 67e12),
    # NVIDIA H20 product brief: 148 TF bf16 dense, 44 TF fp32
    DeviceSku("H20", r"\bH20\b", 148e12, 44e12),
    # NVIDIA H100 Tensor Core GPU datasheet, PCIe column: 1513 TF bf16 sparse, 51 TF fp32
    DeviceSku("H100 PCIe", r"\bH100\b.*\bPCIe\b", 756.5e12, 51e12),
    # NVIDIA H100 datasheet, NVL column (per GPU): 1671 TF bf16 sparse, 60 TF fp32
    DeviceSku("H100 NVL", r"\bH100\b.*\bNVL\b", 835.5e12, 60e12),
    # NVIDIA H100 datasheet, SXM column: 1979 TF bf16 sparse, 67 TF fp32 (driver name "NVIDIA H100 80GB HBM3")
    DeviceSku("H100 SXM", r"\bH100\b", 989.5e12, 67e12),
    # NVIDIA HGX B200 datasheet, per GPU: 4.5 PF bf16 sparse, 75 TF fp32
    DeviceSku("B200", r"\bB200\b", 2250e12, 75e12),
    # NVIDIA A100 Tensor Core GPU datasheet: 312 TF bf16 dense, 19.5 TF fp32 for all four variants
    DeviceSku("A100 80GB PCIe", r"\bA100\b.*\b80GB\b.*\bPCIe\b|\bA100-PCIE-80GB\b", 312e12, 19.5e12),
    DeviceSku("A100 40GB PCIe", r"\bA100-PCIE-40GB\b|\bA100\b.*\bPCIe\b", 312e12, 19.5e12),
    DeviceSku("A100 80GB SXM", r"\bA100-SXM4?-80GB\b|\bA100\b.*\b80GB\b", 312e12, 19.5e12),
    DeviceSku("A100 40GB SXM", r"\bA100\b", 312e12, 19.5e12),
    # NVIDIA L40S datasheet: 362.05 TF bf16 dense (733 sparse), 91.6 TF fp32
    DeviceSku("L40S", r"\bL40S\b", 362.05e12, 91.6e12),
    # NVIDIA L4 datasheet: 242 TF bf16 sparse, 30.3 TF fp32
    DeviceSku("L4", r"\bL4\b", 121e12, 30.3e12),
    # NVIDIA publishes no A10G datasheet; it is AWS's GA102 variant of the A10 (A10 datasheet: 125 TF bf16
    # dense, 31.2 TF fp32), taken here as its peak
    DeviceSku("A10G", r"\bA10G\b", 125e12, 31.2e12),
    DeviceSku("A10", r"\bA10\b", 125e12, 31.2e12),
    # NVIDIA Ada Lovelace architecture whitepaper, appendix: RTX 4090 bf16 with fp32 accumulate 165.2 TF dense,
    # 82.6 TF fp32
    DeviceSku("RTX 4090", r"\bRTX 4090\b", 165.2e12, 82.6e12),
    # AMD Instinct MI300X data sheet: 1307.4 TF bf16 dense, 163.4 TF fp32 matrix
    DeviceSku("MI300X", r"\bMI300X\b", 1307.4e12, 163.4e12),
)

# Nominal CPU core: 2 AVX-512 FMA units x 16 fp32 lanes x 2 FLOP x 2.5 GHz (a rough guide, not a datasheet).
CPU_CORE_PEAK_FLOPS = 160e9


def find_sku(device_name: str) -> DeviceSku | None:
    """The first (most specific) table row whose pattern occurs in ``device_name``; None when none does."""
    for sku in DEVICE_SKUS:
        if re.search(sku.pattern, device_name, flags=re.IGNORECASE):
            return sku
    return None


def peak_flops_for_name(device_name: str, precision: str) -> float | None:
    """Dense peak FLOP/s of ``device_name`` at ``precision`` (bf16/fp16/fp32), or None with a warning."""
    sku = find_sku(device_name)
    if sku is None:
        log.warning("no peak FLOP/s known for device %r: MFU is not reported (set logging.peak_flops, in FLOP/s "
                    "per device, to get it)", device_name)
        return None
    return sku.fp32 if precision == "fp32" else sku.bf16


def device_peak_flops(device: torch.device, precision: str) -> float | None:
    """Peak FLOP/s of one device; CPU: nominal per-core figure x this process's threads; None when unknown."""
    if device.type == "cuda":
        return peak_flops_for_name(torch.cuda.get_device_name(device), precision)
    return CPU_CORE_PEAK_FLOPS * torch.get_num_threads()

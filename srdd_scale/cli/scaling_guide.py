"""Write the scaling guide (d12-d36 at 256 px): docs/scaling_guide.md and a JSON with every number.

    python tools/scaling_guide.py                      # docs/scaling_guide.md + docs/scaling_guide.json
    python tools/scaling_guide.py --gpus 8,64 --depths 16,30 --out-md /tmp/guide.md

Parameters and FLOPs come from srdd_scale.model.flops; memory under ZeRO-3/FSDP full sharding is computed with
the formula printed at the end of the markdown (srdd_scale/analysis/scaling_guide.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srdd_scale.analysis.scaling_guide import GuideSettings, render_markdown, scaling_guide
from srdd_scale.cli import entry_point
from srdd_scale.cli.args import positive_float, positive_int, positive_int_list
from srdd_scale.utils.rundir import PROJECT_ROOT as ROOT


@entry_point
def main(argv: list[str] | None = None) -> int:
    defaults = GuideSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=positive_int_list, default=defaults.depths)
    parser.add_argument("--gpus", type=positive_int_list, default=defaults.gpus, help="GPU counts of the memory table")
    parser.add_argument("--text-dim", type=positive_int, default=defaults.text_dim)
    parser.add_argument("--text-len", type=positive_int, default=defaults.text_len)
    parser.add_argument("--gpu-memory-gib", type=positive_float, default=defaults.gpu_memory_gib)
    parser.add_argument("--out-md", default=str(ROOT / "docs" / "scaling_guide.md"))
    parser.add_argument("--out-json", default=None, help="default: --out-md with .json")
    parser.add_argument("--layout-plan", default=str(ROOT / "docs" / "layout_plan.json"),
                        help="srdd-plan-layout --grid output for the memory table ('' or missing: the formula)")
    args = parser.parse_args(argv)
    settings = GuideSettings(depths=args.depths, gpus=args.gpus, text_dim=args.text_dim, text_len=args.text_len,
                             gpu_memory_gib=args.gpu_memory_gib)
    try:
        guide = scaling_guide(settings)
    except KeyError as err:
        sys.exit(f"error: {err.args[0]}")
    plan_path = Path(args.layout_plan) if args.layout_plan else None
    layout_plan = json.loads(plan_path.read_text()) if plan_path and plan_path.exists() else None
    markdown = render_markdown(guide, layout_plan)
    out_md = Path(args.out_md)
    out_json = Path(args.out_json or out_md.with_suffix(".json"))
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(markdown + "\n")
    out_json.write_text(json.dumps(guide, indent=2) + "\n")
    print(markdown)
    print(f"wrote {out_md} and {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export a training checkpoint (DDP, FSDP or DeepSpeed ZeRO-1/2/3, any world size) to a Hugging Face folder.

    python tools/export_hf.py runs/run-abc123 exports/d2 [--bundle-text-encoder] [--max-shard-size 2GB]

RUN_DIR_OR_CHECKPOINT is a run directory (its newest complete checkpoint is used) or one step_XXXXXXXX folder.
The folder loads with `AutoModel.from_pretrained(OUT_DIR, trust_remote_code=True)` (no srdd_scale needed) and
with `srdd_scale.export.pipeline.SRDDPipeline.from_pretrained(OUT_DIR)`; see docs/export_and_sampling.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import non_negative_int
from srdd_scale.model import SamplingConfig


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT")
    parser.add_argument("out_dir", metavar="OUT_DIR")
    parser.add_argument("--bundle-text-encoder", action="store_true",
                        help="copy the frozen text encoder's weights into OUT_DIR/text_encoder (default: reference it)")
    parser.add_argument("--max-shard-size", default="2GB",
                        help="split model.safetensors into shards with an index above this size (default 2GB)")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights (runs with train.ema_decay > 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    defaults = SamplingConfig()
    parser.add_argument("--cfg", type=float, default=defaults.cfg_scale, help="default CFG scale to record")
    parser.add_argument("--top-k", type=non_negative_int, default=defaults.top_k,
                        help="default top-k to record (0 = off)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, help="default top-p to record (1 = off)")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    args = parser.parse_args(argv)

    from srdd_scale.export.export import export_checkpoint

    sampling = SamplingConfig(cfg_scale=args.cfg, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature)
    out = export_checkpoint(args.source, args.out_dir, bundle_text_encoder=args.bundle_text_encoder,
                            max_shard_size=args.max_shard_size, sampling=sampling, ema=args.ema,
                            overwrite=args.overwrite)
    print(json.dumps({"out_dir": str(out), "files": sorted(p.name for p in out.iterdir())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

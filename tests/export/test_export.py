"""Export from DDP / FSDP / DeepSpeed ZeRO-3 checkpoints: remote-code logits, seeded sampling, broken folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from srdd_scale.config import load_saved_config
from srdd_scale.export.checkpoints import read_model_state, resolve_checkpoint
from srdd_scale.export.export import export_checkpoint
from srdd_scale.export.folder import ExportFolderError
from srdd_scale.export.pipeline import SRDDPipeline
from srdd_scale.run_config import RunConfig
from srdd_scale.model import SamplingConfig
from srdd_scale.model.sampler import sample
from srdd_scale.tokenizer import split_codes
from srdd_scale.train.task import SRDDTask

pytestmark = pytest.mark.slow  # real ranks / trained runs: tens of seconds each

# Runs in `python -I` from an empty folder: srdd_scale's editable-install finder is dropped before anything
# is imported, so transformers must find every module it needs inside the exported folder.
HIDDEN_LOAD = textwrap.dedent("""
    import importlib.util, json, sys
    sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path = [p for p in sys.path if p.rstrip("/") != {root!r}]  # the repo itself, not a venv inside it
    assert importlib.util.find_spec("srdd_scale") is None, "srdd_scale is still importable"
    import torch
    from transformers import AutoModel
    for export_dir, inputs_path, out_path in json.loads(sys.argv[1]):
        inputs = torch.load(inputs_path, weights_only=True)
        model = AutoModel.from_pretrained(export_dir, trust_remote_code=True)
        with torch.no_grad():
            logits = model(**inputs).logits
        torch.save({{"logits": logits, "class": type(model).__module__,
                    "srdd_loaded": "srdd_scale" in sys.modules}}, out_path)
""")
ROOT = Path(__file__).resolve().parents[2]


def reference(run_dir: Path):
    """The training model rebuilt from its checkpoint, its frozen parts, and one batch of inputs."""
    cfg = load_saved_config(run_dir / "config.yaml", RunConfig)
    task = SRDDTask(cfg, torch.device("cpu"))
    model = task.build_model().eval()
    _, folder = resolve_checkpoint(run_dir)
    model.load_state_dict(read_model_state(folder, model.state_dict()))
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, task.tokenizer.vocab_size, (3, task.tokens_per_image), generator=gen)
    text_ids = torch.randint(2, 50, (3, 6), generator=gen)
    text_mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 2 + [0] * 4], dtype=torch.bool)
    inputs = {"teacher_inputs": task.tokenizer.teacher_forcing_inputs(split_codes(codes, task.patch_nums)),
              "text_states": task.text_encoder(text_ids, text_mask), "text_mask": text_mask,
              "cond_drop": torch.tensor([False, False, True])}
    return task, model, inputs


def load_hidden(exports: list[tuple[Path, dict]], tmp: Path) -> list[dict]:
    """Logits of AutoModel.from_pretrained(export) on each input set, from one fresh srdd_scale-free process."""
    script = tmp / "hidden_load.py"
    script.write_text(HIDDEN_LOAD.format(root=str(ROOT)))
    jobs = []
    for number, (export_dir, inputs) in enumerate(exports):
        torch.save(inputs, tmp / f"inputs_{number}.pt")
        jobs.append([str(export_dir), str(tmp / f"inputs_{number}.pt"), str(tmp / f"out_{number}.pt")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf_home"), TRANSFORMERS_OFFLINE="1")
    workdir = tmp / "cwd"
    workdir.mkdir()
    done = subprocess.run([sys.executable, "-I", str(script), json.dumps(jobs)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return [torch.load(out, weights_only=True) for _, _, out in jobs]


def test_remote_code_logits_equal_training_model(trained, tmp_path):
    """DDP, FSDP and ZeRO-3 exports, loaded by plain transformers without srdd_scale, match the training model."""
    backends = ("ddp", "fsdp", "deepspeed")
    cases = {}
    for backend in backends:
        run_dir, export_dir = trained(backend)
        task, model, inputs = reference(run_dir)
        with torch.no_grad():
            expected = model(**inputs)
        torch.manual_seed(task.cfg.train.seed)
        with torch.no_grad():  # the checkpoint was trained: its weights are not the seeded initial ones
            assert not torch.allclose(task.build_model().eval()(**inputs), expected, atol=1e-4), backend
        cases[backend] = (export_dir, inputs, expected)
    loaded = load_hidden([(export_dir, inputs) for export_dir, inputs, _ in cases.values()], tmp_path)
    for backend, result in zip(cases, loaded):
        assert result["class"].startswith("transformers_modules.") and not result["srdd_loaded"], backend
        assert torch.equal(result["logits"], cases[backend][2]), backend


def test_backends_agree(trained):
    """Same seed, data and fp32 steps: the three backends' exported weights are numerically the same model."""
    states = {b: SRDDPipeline.from_pretrained(trained(b)[1]).model.state_dict() for b in ("ddp", "fsdp", "deepspeed")}
    for backend in ("fsdp", "deepspeed"):
        for key, value in states["ddp"].items():
            torch.testing.assert_close(states[backend][key], value, atol=2e-5, rtol=1e-4, msg=f"{backend}: {key}")


def test_seeded_sampling_identical_before_and_after_export(trained):
    run_dir, export_dir = trained("ddp")
    task, model, _ = reference(run_dir)
    pipe = SRDDPipeline.from_pretrained(export_dir)
    prompts = ["a red circle", "a small blue square", "a green triangle"]
    cfg = SamplingConfig(cfg_scale=2.0, top_k=8, top_p=0.9, resample="mask", mr_steps=1, p_resample=0.05)
    text_states, text_mask = pipe.encode_prompts(prompts)
    before = sample(model, task.tokenizer, text_states=text_states, text_mask=text_mask, cfg=cfg,
                    generator=torch.Generator().manual_seed(7))
    after = pipe.generate_codes(prompts, sampling=cfg, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    other_seed = pipe.generate_codes(prompts, sampling=cfg, seed=8)
    assert not all(torch.equal(a, b) for a, b in zip(after, other_seed))
    images = pipe(prompts, seed=7, sampling=cfg, batch_size=2)
    assert len(images) == 3 and images[0].size == (task.tokenizer.image_size,) * 2


def test_sharded_export_with_bundled_text_encoder(trained, tmp_path):
    run_dir, single = trained("ddp")
    out = export_checkpoint(run_dir, tmp_path / "sharded", bundle_text_encoder=True, max_shard_size="100KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (out / "model.safetensors").exists()
    assert (out / "text_encoder" / "config.json").is_file()
    assert json.loads((out / "config.json").read_text())["text_config"]["encoder"] == "text_encoder"
    one, many = SRDDPipeline.from_pretrained(single), SRDDPipeline.from_pretrained(out)
    for key, value in one.model.state_dict().items():
        assert torch.equal(many.model.state_dict()[key], value), key
    states_one, _ = one.encode_prompts(["a red circle"])
    states_many, _ = many.encode_prompts(["a red circle"])
    assert torch.equal(states_one, states_many)
    _, _, inputs = reference(run_dir)
    with torch.no_grad():
        expected = one.model(**inputs)
    assert torch.equal(load_hidden([(out, inputs)], tmp_path)[0]["logits"], expected)


def _broken_copy(export_dir: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(export_dir, copy)
    return copy


@pytest.mark.parametrize("relative, damage", [
    ("model.safetensors", "delete"),
    ("model.safetensors", "truncate"),
    ("config.json", "garble"),
    ("config.json", "delete"),
    ("generation_config.json", "garble"),
    ("image_tokenizer/tokenizer.safetensors", "delete"),
    ("image_tokenizer/tokenizer_config.json", "garble"),
])
def test_broken_export_names_the_file(trained, tmp_path, relative, damage):
    _, export_dir = trained("ddp")
    folder = _broken_copy(export_dir, tmp_path, "broken")
    target = folder / relative
    if damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        target.write_text("{ not json")
    with pytest.raises(ExportFolderError, match=relative.replace(".", r"\.")):
        SRDDPipeline.from_pretrained(folder)


def test_missing_text_tokenizer_names_the_file(trained, tmp_path):
    _, export_dir = trained("ddp")
    folder = _broken_copy(export_dir, tmp_path, "broken")
    shutil.rmtree(folder / "text_tokenizer")
    with pytest.raises(ExportFolderError, match="text_tokenizer"):
        SRDDPipeline.from_pretrained(folder)


def test_export_refuses_incomplete_checkpoint_and_non_empty_target(trained, tmp_path):
    run_dir, export_dir = trained("ddp")
    _, folder = resolve_checkpoint(run_dir)
    partial = tmp_path / "step_00000009"
    shutil.copytree(folder, partial)
    (partial / "COMPLETE").unlink()
    with pytest.raises(FileNotFoundError, match="COMPLETE"):
        export_checkpoint(partial, tmp_path / "out")
    with pytest.raises(FileExistsError, match=str(export_dir)):
        export_checkpoint(run_dir, export_dir)


def test_ema_export(trained, tmp_path):
    """--ema writes the averaged weights; checked against DCP's own torch.save conversion of the checkpoint."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    run_dir, raw_export = trained("fsdp_ema")
    out = export_checkpoint(run_dir, tmp_path / "ema", ema=True)
    _, folder = resolve_checkpoint(run_dir)
    dcp_to_torch_save(folder / "dcp", tmp_path / "full.pt")
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    ema, raw = SRDDPipeline.from_pretrained(out).model, SRDDPipeline.from_pretrained(raw_export).model
    for name, param in ema.named_parameters():
        assert torch.equal(param, full["extra"]["ema"][name]), name
        assert torch.equal(raw.get_parameter(name), full["model"][name]), name
    assert any(not torch.equal(p, raw.get_parameter(n)) for n, p in ema.named_parameters())
    assert json.loads((out / "config.json").read_text())["training"]["ema_weights"] is True
    with pytest.raises(ValueError, match="no EMA weights"):
        export_checkpoint(trained("ddp")[0], tmp_path / "none", ema=True)


def test_swapped_tokenizers_are_refused_by_identity(trained, tmp_path):
    """config.json records both tokenizers' identities; a swapped text tokenizer or altered image tokenizer is
    refused naming the tokenizer, not silently used."""
    from safetensors.torch import load_file, save_file

    from srdd_scale.data.shapes import iter_shapes
    from srdd_scale.export.folder import ExportIdentityError
    from srdd_scale.text import train_sentencepiece

    _, export_dir = trained("ddp")
    identities = json.loads((export_dir / "config.json").read_text())["identities"]
    assert set(identities) == {"image_tokenizer", "text_tokenizer"}
    folder = _broken_copy(export_dir, tmp_path, "text_swapped")
    (spm,) = (folder / "text_tokenizer").glob("*.model")
    captions = (s.caption for s in iter_shapes("train", seed=1, image_size=16, count=500))
    other = train_sentencepiece(captions, tmp_path / "other", vocab_size=80)
    shutil.copy(other, spm)
    with pytest.raises(ExportIdentityError, match="text tokenizer"):
        SRDDPipeline.from_pretrained(folder)
    folder = _broken_copy(export_dir, tmp_path, "image_swapped")
    weights = folder / "image_tokenizer" / "tokenizer.safetensors"
    state = load_file(str(weights))
    name = next(iter(state))
    save_file({**state, name: state[name] + 0.01}, str(weights))
    with pytest.raises(ExportIdentityError, match="image tokenizer"):
        SRDDPipeline.from_pretrained(folder)


@pytest.mark.parametrize("value", ["../outside/spm.model", "/etc/passwd"])
def test_export_paths_must_stay_inside_the_folder(trained, tmp_path, value):
    _, export_dir = trained("ddp")
    folder = _broken_copy(export_dir, tmp_path, "escape")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["tokenizer"] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportFolderError, match="points outside the export folder"):
        SRDDPipeline.from_pretrained(folder)


def test_planted_pickle_in_an_export_is_refused_by_every_loader(trained, tmp_path):
    """A `pytorch_model.bin` payload beside the safetensors: our pipeline and plain transformers both refuse."""
    _, export_dir = trained("ddp")
    folder = _broken_copy(export_dir, tmp_path, "planted")
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"transformer.pos_embed": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(ExportFolderError, match=r"pytorch_model\.bin: a pickle-format file"):
        SRDDPipeline.from_pretrained(folder)
    from transformers import AutoModel

    with pytest.raises(OSError, match=r"pytorch_model\.bin: a pickle-format file"):
        AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    assert not marker.exists()


def test_export_verifies_the_checkpoint_and_names_the_damaged_file(trained, tmp_path):
    from srdd_scale.train.checkpoint import CheckpointVerificationError

    run_dir, _ = trained("ddp")
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    _, folder = resolve_checkpoint(copy)
    distcp = sorted((folder / "dcp").glob("*.distcp"))[-1]
    data = bytearray(distcp.read_bytes())
    data[-10] ^= 0x40
    distcp.write_bytes(bytes(data))
    with pytest.raises(CheckpointVerificationError, match=rf"{distcp.name}: content hash differs"):
        export_checkpoint(folder, tmp_path / "out")
    with pytest.raises(CheckpointVerificationError, match="none of its 1 complete checkpoints passed"):
        export_checkpoint(copy, tmp_path / "out")

"""Config machinery: YAML composition, overrides, and error messages that name the key."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import pytest
import yaml

from srdd_scale.config import ConfigError, build, config_hash, load_config, save_config, load_saved_config, to_dict


@dataclasses.dataclass(frozen=True)
class Inner:
    depth: int = 4  # transformer depth
    lr: float = 1e-4
    patch_nums: tuple[int, ...] = (1, 2, 4)
    mode: Literal["markovian", "block_causal"] = "markovian"
    checkpoint: Optional[str] = None

    def validate(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"inner.depth: got {self.depth}, expected >= 1")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    name: str = "run"

    def validate(self) -> None:
        self.inner.validate()


def test_yaml_defaults_and_overrides_compose(tmp_path):
    (tmp_path / "base.yaml").write_text("inner: {depth: 2, lr: 0.1}\nname: base\n")
    (tmp_path / "child.yaml").write_text("defaults: [base.yaml]\ninner: {depth: 3}\n")
    cfg = load_config([tmp_path / "child.yaml"], ["inner.lr=3e-4", "inner.patch_nums=1,2,3,4"], cls=Outer)
    assert cfg.inner.depth == 3
    assert cfg.inner.lr == pytest.approx(3e-4)
    assert cfg.inner.patch_nums == (1, 2, 3, 4)
    assert cfg.name == "base"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "changed"  # type: ignore[misc]


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError) as err:
        load_config([], ["inner.detph=3"], cls=Outer)
    message = str(err.value)
    assert "inner.detph" in message and "did you mean inner.depth" in message
    assert "checkpoint, depth, lr, mode, patch_nums" in message


def test_wrong_type_names_key_value_and_expected_type():
    with pytest.raises(ConfigError, match=r"inner.depth: got 'eight', expected int"):
        load_config([], ["inner.depth=eight"], cls=Outer)
    with pytest.raises(ConfigError, match=r"inner.mode: got 'causal', expected one of 'markovian', 'block_causal'"):
        build(Outer, {"inner": {"mode": "causal"}})


def test_validation_runs_at_load():
    with pytest.raises(ConfigError, match=r"inner.depth: got 0, expected >= 1"):
        load_config([], ["inner.depth=0"], cls=Outer)


def test_missing_file_and_bad_override_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config([tmp_path / "nope.yaml"], cls=Outer)
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config([], ["inner.depth"], cls=Outer)


def test_round_trip_through_saved_file(tmp_path):
    cfg = load_config([], ["inner.depth=7", "inner.checkpoint=/x/y.pth"], cls=Outer)
    save_config(cfg, tmp_path / "config.yaml")
    again = load_saved_config(tmp_path / "config.yaml", cls=Outer)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == to_dict(cfg)
    assert config_hash(load_config([], ["inner.depth=8"], cls=Outer)) != config_hash(cfg)


def test_run_config_rejects_a_patch_schedule_not_ending_at_the_latent_size():
    with pytest.raises(ConfigError, match=r"tokenizer.patch_nums.*latent"):
        load_config([], ["tokenizer.image_size=64", "tokenizer.ch_mult=1,2,2,4", "tokenizer.patch_nums=1,2,3,4,6"])


def test_run_config_unknown_section_lists_valid_sections():
    with pytest.raises(ConfigError, match=r"unknown config key 'modle'; did you mean model\?"):
        load_config([], ["modle.depth=4"])


@pytest.mark.parametrize("tool, config, override", [
    ("train.py", "configs/quickstart.yaml", "train.total_steps=70"),
    ("train_tokenizer.py", "configs/tokenizer/shapes_64.yaml", "tokenizer_train.steps=7"),
    ("pretokenize.py", "configs/data/shapes.yaml", "data.seed=7"),
    ("train_text_tokenizer.py", "configs/text/shapes_spm.yaml --output unused.model", "text.max_length=7"),
    ("sweep.py", "configs/sweep/demo_cpu.yaml", "fit.seed=7"),
])
def test_tools_take_overrides_after_options(tool, config, override):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config, *options = config.split()
    proc = subprocess.run([sys.executable, f"tools/{tool}", config, "--print-config", *options, override], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    section, key_value = override.split(".", 1)
    key, value = key_value.split("=")
    assert yaml.safe_load(proc.stdout)[section][key] == int(value)

"""Config machinery: YAML composition, overrides, and error messages that name the key."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import pytest
import yaml

from srdd_scale.config import ConfigError, build, config_hash, load_config, save_config, load_saved_config, to_dict
from srdd_scale.run_config import RunConfig


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
        load_config([tmp_path / "nope.yaml"], [], Outer)
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
        RunConfig.load([], ["tokenizer.image_size=64", "tokenizer.ch_mult=1,2,2,4", "tokenizer.patch_nums=1,2,3,4,6"])


def test_run_config_unknown_section_lists_valid_sections():
    with pytest.raises(ConfigError, match=r"unknown config key 'modle'; did you mean model\?"):
        RunConfig.load([], ["modle.depth=4"])


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


def test_yaml_alias_bomb_fails_fast_with_bounded_memory(tmp_path):
    """A ~300-byte billion-laughs file (9**9 strings once expanded) is refused without ever being printed whole."""
    import tracemalloc

    levels = ["&a [x,x,x,x,x,x,x,x,x]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"&{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("train:\n  seed: [" + ", ".join(levels) + "]\n")
    assert len(path.read_bytes()) < 400
    tracemalloc.start()
    with pytest.raises(ConfigError) as err:
        RunConfig.load([path])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert str(err.value).startswith("train.seed: got [[") and len(str(err.value)) < 300


def test_defaults_cycle_is_named(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: [b.yaml]\nname: a\n")
    (tmp_path / "b.yaml").write_text("defaults: [a.yaml]\nname: b\n")
    with pytest.raises(ConfigError, match=r"defaults: form a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)"):
        load_config([tmp_path / "a.yaml"], [], Outer)
    (tmp_path / "self.yaml").write_text("defaults: [self.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config([tmp_path / "self.yaml"], [], Outer)


@pytest.mark.parametrize("override, message", [
    ("inner.patch_nums=[1, 2", r"override 'inner.patch_nums=\[1, 2': the value is not valid YAML"),
    ("inner.depth={a: b", r"the value is not valid YAML"),
    ("inner..depth=3", r"is not a dotted key"),
    ("=3", r"is not a dotted key"),
    ("inner.lr=inf", r"inner.lr: got 'inf', expected a finite float"),
    ("inner.lr=.nan", r"inner.lr: got nan, expected a finite float"),
])
def test_malformed_or_non_finite_override_gives_one_line_error(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config([], [override], Outer)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("train.base_lr=inf", "train.base_lr"),
    ("train.base_lr=-1e-4", "train.base_lr"),
    ("train.eps=-1e-8", "train.eps"),
    ("train.eps=0", "train.eps"),
    ("train.weight_decay=-0.05", "train.weight_decay"),
    ("train.seed=-1", "train.seed"),
    ("model.depth=240", "model.depth"),
    ("model.drop_path_rate=-0.5", "model.drop_path_rate"),
    ("model.mlp_ratio=.inf", "model.mlp_ratio"),
    ("data.resize_ratio=nan", "data.resize_ratio"),
    ("tokenizer_train.weight_decay=-1", None),  # not a RunConfig section: rejected as an unknown key
])
def test_run_config_range_checks_name_the_right_key(override, key):
    with pytest.raises(ConfigError) as err:
        RunConfig.load([], [override])
    assert str(err.value).startswith(key or "unknown config key"), str(err.value)


def test_deep_model_with_explicit_drop_path_is_valid():
    assert RunConfig.load([], ["model.depth=240", "model.drop_path_rate=0.5"]).model.max_drop_path == 0.5


def test_config_module_imports_nothing_from_the_package():
    import ast
    from pathlib import Path

    import srdd_scale.config as config_module

    tree = ast.parse(Path(config_module.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in imported if m.startswith("srdd_scale") or m.startswith(".")], imported

"""Run directories: keyed by config, holding the resolved config and provenance."""

from __future__ import annotations

import json

from srdd_scale.config import load_saved_config
from srdd_scale.utils.rundir import prepare_run_dir, run_dir_for

import dataclasses

from srdd_scale.config import load_config


@dataclasses.dataclass(frozen=True)
class Inner:
    depth: int = 4


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_run_dir_is_keyed_by_config_and_holds_provenance(tmp_path):
    cfg = load_config([], ["inner.depth=5"], cls=Outer)
    run_dir = run_dir_for(cfg, tmp_path, "demo")
    assert run_dir == run_dir_for(load_config([], ["inner.depth=5"], cls=Outer), tmp_path, "demo")
    assert run_dir != run_dir_for(load_config([], ["inner.depth=6"], cls=Outer), tmp_path, "demo")
    prepare_run_dir(run_dir, cfg)
    assert load_saved_config(run_dir / "config.yaml", cls=Outer) == cfg
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["libraries"]["torch"]
    assert prov["machine"]["cpu_count"] >= 1
    assert (run_dir / "checkpoints").is_dir()


def test_bench_provenance_has_commit_machine_and_load_but_no_diff():
    from srdd_scale.utils.rundir import bench_provenance

    prov = bench_provenance()
    assert "git_diff" not in prov and isinstance(prov["git_dirty"], bool)
    assert prov["machine"]["cpu_count"] >= 1 and prov["libraries"]["torch"]
    assert prov["load_average_1m"] >= 0
    json.dumps(prov)  # every bench writes it as JSON

"""Process-group plumbing: a tool run in-process leaves the caller's environment as it found it."""

import os

import pytest

from srdd_scale.utils.dist import destroy_distributed, dist_env_from_environ, init_distributed

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_launcher(monkeypatch):
    for name in (*LAUNCHER_VARS, "SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)


def test_single_process_group_removes_the_variables_it_added(no_launcher):
    env = init_distributed()
    try:
        assert (env.rank, env.world_size) == (0, 1)
        assert all(name in os.environ for name in LAUNCHER_VARS)
    finally:
        destroy_distributed()
    # a stale MASTER_PORT here would be exported to the next sbatch/submitit job and break its rendezvous
    assert not [name for name in LAUNCHER_VARS if name in os.environ]


def test_variables_the_launcher_set_are_kept(no_launcher, monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    init_distributed()
    destroy_distributed()
    assert os.environ["MASTER_ADDR"] == "127.0.0.1"
    assert "MASTER_PORT" not in os.environ


def test_slurm_variables_give_rank_and_world(no_launcher, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    env = dist_env_from_environ()
    assert (env.rank, env.world_size, env.local_world_size) == (3, 8, 4)


def test_multi_process_without_a_port_is_refused(no_launcher, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="MASTER_PORT"):
        init_distributed()
    destroy_distributed()

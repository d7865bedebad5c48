"""Thread policy: unset counts follow the free cores, explicit ones are kept; children get a passive OpenMP wait unless the user chose one."""
import os

from srdd_scale.utils import threads


def test_stage_threads_follow_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    assert threads.free_cores(load=0.1) == 2
    assert threads.free_cores(load=1.2) == 1
    assert threads.free_cores(load=9.7) == 1  # never below one
    assert threads.stage_threads(None, load=0.1) == 2  # None: every free core
    assert threads.stage_threads(None, load=1.0) == 1
    assert threads.stage_threads(2, load=1.4) == 2  # an explicit count is kept: results depend on it
    assert threads.stage_threads(1, load=0.0) == 1


def test_usable_cores_is_the_affinity_mask():
    assert threads.usable_cores() == len(os.sched_getaffinity(0))


def test_passive_wait_is_set_for_children_but_a_user_choice_wins():
    assert threads.with_passive_wait({"PATH": "/bin"}) == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.with_passive_wait({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    environ = {}
    threads.use_passive_wait(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE"}

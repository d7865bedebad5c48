"""Tools end with one readable line, not a traceback, when the output folder cannot be written or a count is
not a count (issue 14 item 5): pretokenize, export and sample into a read-only folder; sample --num 0."""

from __future__ import annotations

import errno
import sys

import pytest

from srdd_scale.cli import entry_point, export_hf, pretokenize, sample
from tests.helpers.training import base_overrides


def exit_and_stderr(main, argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr as the shell sees them (``sys.exit("message")`` prints the message, exit code 1)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = 1 if isinstance(exit_.code, str) else exit_.code
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    return code, capsys.readouterr().err.strip()


def assert_one_read_only_line(main, argv: list[str], capsys, path) -> None:
    code, err = exit_and_stderr(main, argv, capsys)
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err and "Read-only file system" in err and "writable file system" in err, err


def test_pretokenize_into_a_read_only_folder(train_assets, read_only_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = base_overrides(train_assets, tmp_path / "runs", "ddp", **{
        "data.synthetic_train_samples": 4, "data.synthetic_heldout_samples": 0, "data.decode_workers": 0})
    out = read_only_dir / "shards"
    assert_one_read_only_line(pretokenize.main, [*overrides, "--output", str(out)], capsys, out)


@pytest.mark.slow
def test_export_and_sample_into_a_read_only_folder(trained, read_only_dir, capsys):
    run_dir, export_dir = trained("ddp")
    assert_one_read_only_line(export_hf.main, [str(run_dir), str(read_only_dir / "export")], capsys, read_only_dir)
    out = read_only_dir / "samples"
    assert_one_read_only_line(sample.main, ["--model", str(export_dir), "--prompt", "a red circle", "--out", str(out)],
                              capsys, out)


@pytest.mark.parametrize("argv, flag", [(["--num", "0"], "--num"), (["--batch-size", "-2"], "--batch-size"),
                                        (["--num", "two"], "--num")])
def test_sample_rejects_counts_below_one(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--model", "unused", "--prompt", "a red circle", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument {flag}: expected a whole number > 0" in err


def test_entry_point_passes_other_errors_through(capsys):
    def full_disk(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/shard.mds")

    def broken(argv):
        raise OSError(errno.EIO, "Input/output error", "/data/in")

    assert entry_point(full_disk)([]) == 1
    assert capsys.readouterr().err == ("error: /data/out/shard.mds: No space left on device; free space there, or "
                                       "choose an output folder on another disk\n")
    with pytest.raises(OSError, match="Input/output error"):  # no known fix: the traceback is the information
        entry_point(broken)([])

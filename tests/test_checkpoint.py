"""Checkpoints: atomic, safe to load, and an interrupted run keeps its work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcdgan.checkpoint import atomic_write, keep_copy, load_checkpoint, save_checkpoint, save_rotating
from dcdgan.errors import UserError
from dcdgan.nets import GeneratorSpec, build_generator
from dcdgan.runs import MetricsLog
from dcdgan.weights import save_generator

SPEC = GeneratorSpec("mobile_resnet_9blocks", ngf=4, input_nc=1, output_nc=1)


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.ckpt"
    save_checkpoint(path, {"step": 1})

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_permissions_of_any_new_file(tmp_path, umask):
    # atomic writes once delivered every run file and export as 0600 (tempfile.mkstemp's mode): a team member or a
    # web server running as another user could not read them. Now the umask decides, as for any file a tool creates.
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "page.html", lambda tmp: tmp.write_text("<p>"))
        save_checkpoint(tmp_path / "a.ckpt", {"step": 1})
        save_rotating(tmp_path / "checkpoints", {"step": 1}, keep=2)
        save_rotating(tmp_path / "checkpoints", {"step": 2}, keep=2)  # the previous last.ckpt becomes last.1.ckpt
        keep_copy(tmp_path / "a.ckpt", tmp_path / "b.ckpt")
        # the deliverable: safetensors' save_file replaces the temporary file with one of mode 0600 (found on
        # 2026-12-05: every student.safetensors was readable by its owner alone)
        save_generator(tmp_path / "student.safetensors", build_generator(SPEC), SPEC, {})
    finally:
        os.umask(previous)
    files = [tmp_path / "page.html", tmp_path / "a.ckpt", tmp_path / "b.ckpt", tmp_path / "student.safetensors", tmp_path / "student.json",
             *sorted((tmp_path / "checkpoints").iterdir())]
    assert [f.name for f in files[5:]] == ["last.1.ckpt", "last.ckpt"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(0o666 & ~umask) for f in files}
    assert not list(tmp_path.rglob("*.tmp"))


def test_corrupt_foreign_and_unsafe_files_are_refused(tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    save_checkpoint(truncated, {"step": 1, "w": torch.zeros(1000)})
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(UserError, match="truncated.ckpt: not a readable dcdgan checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="foreign.ckpt: not a dcdgan checkpoint"):
        load_checkpoint(foreign)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"format": 1, "x": Evil()}, evil)
    with pytest.raises(UserError, match="evil.ckpt: not a readable dcdgan checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(UserError, match="missing.ckpt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_ctrl_c_saves_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DCDGAN_VGG16": "", "TORCH_HOME": str(tmp_path / "torch")}
    cmd = [sys.executable, "-m", "dcdgan", "distill", "model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8",
           "perceptual.weights=none", "eval.final=false", "train.checkpoint_every=0", "train.log_every=1",
           "train.sample_every=0", "eval.max_images=8", "--run-dir", str(run), "--quiet"]
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "continue with: dcdgan distill --resume" in out
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    saved = state["step"]
    assert saved >= 2
    assert 0 < state["train_seconds"] < time.time() - started  # this session's wall time, set-up included
    # The run's clock goes on over a resume: make the first session look like 5,000 s long, so the total cannot
    # pass for the second session's own time (which is a few seconds).
    save_checkpoint(run / "checkpoints" / "last.ckpt", {**state, "train_seconds": 5000.0})
    resumed = time.time()
    done = subprocess.run([*cmd[:3], "distill", "--resume", str(run), f"train.max_steps={saved + 1}"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    second = time.time() - resumed
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["step"] == saved + 1
    final = [r for r in MetricsLog(log).read() if "train_seconds" in r]
    assert [r["step"] for r in final] == [saved + 1]
    assert 5000 < final[0]["train_seconds"] < 5000 + second
    assert f"trained {saved + 1} steps in {final[0]['train_seconds']:.0f}s" in done.stdout


def test_a_temporary_name_in_use_is_never_reused(tmp_path, monkeypatch):
    # another writer's temporary file (same random part) must not be opened and overwritten: the next name is tried,
    # and when every try collides the error names the folder
    from dcdgan import checkpoint

    taken = tmp_path / ".page.html.aaaa.tmp"
    taken.write_text("another writer's")
    draws = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(checkpoint.secrets, "token_hex", lambda n: next(draws))
    assert checkpoint.temp_file(tmp_path, "page.html") == str(tmp_path / ".page.html.bbbb.tmp")
    assert taken.read_text() == "another writer's"
    monkeypatch.setattr(checkpoint.secrets, "token_hex", lambda n: "aaaa")
    with pytest.raises(FileExistsError, match=f"^{tmp_path}: no free temporary name for page.html$"):
        checkpoint.temp_file(tmp_path, "page.html")

"""Checkpoint contents at the unit level: the format tag, RNG capture and restore, what loading accepts."""

from __future__ import annotations

import random

import pytest
import torch

from dcdgan.checkpoint import FORMAT, check_compatible, load_checkpoint, load_network_state, rng_state, save_checkpoint, set_rng_state
from dcdgan.errors import UserError


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_checkpoint_file(tmp_path):
    random.seed(11)
    torch.manual_seed(11)
    random.gauss(0, 1)  # leaves a cached second gaussian in Python's state: it must be restored too
    save_checkpoint(tmp_path / "c.ckpt", {"rng": rng_state()})
    expected = draws()
    random.seed(0)
    torch.manual_seed(0)
    set_rng_state(load_checkpoint(tmp_path / "c.ckpt")["rng"])
    assert draws() == expected
    assert set(rng_state()) == {"python", "torch", "cuda"}


def test_saved_file_carries_the_format_tag_and_the_state(tmp_path):
    save_checkpoint(tmp_path / "c.ckpt", {"step": 7, "w": torch.arange(3)})
    raw = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert raw["format"] == FORMAT == 1 and raw["step"] == 7 and torch.equal(raw["w"], torch.arange(3))
    assert load_checkpoint(tmp_path / "c.ckpt")["step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]


def test_other_format_versions_and_non_dicts_are_refused(tmp_path):
    torch.save({"format": FORMAT + 1, "step": 1}, tmp_path / "newer.ckpt")
    with pytest.raises(UserError, match=r"newer.ckpt: not a dcdgan checkpoint \(format 1\)"):
        load_checkpoint(tmp_path / "newer.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(UserError, match="list.ckpt: not a dcdgan checkpoint"):
        load_checkpoint(tmp_path / "list.ckpt")
    (tmp_path / "dir.ckpt").mkdir()
    with pytest.raises(UserError, match="dir.ckpt: checkpoint not found"):
        load_checkpoint(tmp_path / "dir.ckpt")


def config(**changes) -> dict:
    from dcdgan.config import load_config, to_dict

    cfg = to_dict(load_config("quickstart", []))
    for key, value in changes.items():
        section, name = key.split("__") if "__" in key else (None, key)
        (cfg[section] if section else cfg)[name] = value
    return cfg


def test_check_compatible_names_the_architecture_keys_that_differ(tmp_path):
    state = {"config": config()}
    check_compatible(state, config(train__lr=0.1, train__max_steps=9, data__root="/elsewhere", eval__every=3), tmp_path / "c.ckpt")
    with pytest.raises(UserError) as err:
        check_compatible(state, config(model__student_ngf=8, task="cyclegan", distill__teacher_taps=["model.9"], model__ndf=3), tmp_path / "c.ckpt")
    assert str(err.value) == (f"{tmp_path / 'c.ckpt'}: made for other networks (model.student_ngf=16 there, 8 here; model.ndf=64 there, "
                              "3 here; distill.teacher_taps=['model.9', 'model.12', 'model.15', 'model.18'] there, ['model.9'] here; "
                              "task='pix2pix' there, 'cyclegan' here); resume with the run's own settings or start a new run")  # every difference
    with pytest.raises(UserError, match="task='pix2pix' there, 'cyclegan' here"):
        check_compatible(state, config(task="cyclegan"), tmp_path / "c.ckpt")
    for key, value in [("data__input_nc", 3), ("data__output_nc", 3), ("distill__method", "omgd"), ("distill__schedule", "burst"),
                       ("distill__student_taps", ["model.9"]), ("distill__disc_tap", "model.7"), ("distill__train_teacher_connectors", True),
                       ("model__teacher_netG", "unet_256")]:
        with pytest.raises(UserError, match=key.replace("__", ".")):
            check_compatible(state, config(**{key: value}), tmp_path / "c.ckpt")
    with pytest.raises(UserError, match="data.input_nc=None there, 1 here"):  # a checkpoint without a config is for other networks
        check_compatible({}, config(), tmp_path / "c.ckpt")


def test_load_network_state_one_line_errors():
    net = torch.nn.Linear(2, 3)
    load_network_state(net, {"weight": torch.ones(3, 2), "bias": torch.zeros(3)}, "f.ckpt", "student")
    assert torch.equal(net.weight, torch.ones(3, 2))
    with pytest.raises(UserError) as err:
        load_network_state(net, {"weight": torch.ones(4, 2), "bias": torch.zeros(3)}, "f.ckpt", "student")
    assert str(err.value) == ("f.ckpt: the stored student does not fit this config's network (size mismatch for weight: copying a param "
                              "with shape torch.Size([4, 2]) from checkpoint, the shape in current model is torch.Size([3, 2]).)")
    with pytest.raises(UserError) as err:
        load_network_state(net, {"weight": torch.ones(3, 2)}, "g.ckpt", "teacher")
    assert str(err.value) == ("g.ckpt: the stored teacher does not fit this config's network "
                              '(Missing key(s) in state_dict: "bias".)')


def test_unreadable_file_message_names_the_error(tmp_path):
    (tmp_path / "text.ckpt").write_text("this is not a zip or a pickle\nsecond line")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "text.ckpt")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'text.ckpt'}: not a readable dcdgan checkpoint (")
    detail = message.split("(", 1)[1]
    kind, first_line = detail.split(": ", 1)
    assert kind.endswith("Error") and kind != "NoneType" and first_line not in ("None)", ")") and "\n" not in message


def test_load_network_state_names_unexpected_keys_and_falls_back_to_the_first_line():
    net = torch.nn.Linear(2, 3)
    good = {"weight": torch.ones(3, 2), "bias": torch.zeros(3)}
    with pytest.raises(UserError) as err:
        load_network_state(net, good | {"extra": torch.ones(1)}, "f.ckpt", "student")
    assert str(err.value) == "f.ckpt: the stored student does not fit this config's network (Unexpected key(s) in state_dict: \"extra\".)"
    with pytest.raises(UserError) as err:  # no informative line: torch's first line
        load_network_state(net, [1, 2], "f.ckpt", "student")
    assert str(err.value) == "f.ckpt: the stored student does not fit this config's network (Expected state_dict to be dict-like, got <class 'list'>.)"
    with pytest.raises(UserError) as err:  # a long key: the detail is capped at 160 characters
        load_network_state(net, good | {"k" * 300: torch.ones(1)}, "f.ckpt", "student")
    detail = str(err.value).split("network (", 1)[1][:-1]
    assert len(detail) == 160 and detail.startswith('Unexpected key(s) in state_dict: "kkk')

    class Silent(torch.nn.Module):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            raise RuntimeError()  # no message at all: the error's type stands in

    with pytest.raises(UserError) as err:
        load_network_state(Silent(), good, "f.ckpt", "teacher")
    assert str(err.value) == "f.ckpt: the stored teacher does not fit this config's network (RuntimeError)"


def test_unreadable_file_detail_is_capped_at_120_characters(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("never printed",))

    torch.save({"format": FORMAT, "x": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "evil.ckpt")
    detail = str(err.value).split("(UnpicklingError: ", 1)[1]
    assert detail.endswith(")") and len(detail) == 121  # torch's first line is longer: cut to 120 characters


def test_atomic_write_makes_missing_folders_and_writes_a_dot_tmp_beside_the_target(tmp_path, monkeypatch):
    from dcdgan import checkpoint

    seen = []
    path = tmp_path / "a" / "b" / "c.ckpt"
    checkpoint.atomic_write(path, lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert path.read_bytes() == b"x" and len(seen) == 1
    assert seen[0].parent == path.parent and seen[0].name.startswith(".c.ckpt.") and seen[0].name.endswith(".tmp")
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.ckpt"]

    def vanish_then_fail(tmp):
        tmp.unlink()  # the temporary file is already gone when the write fails: the write's error is reported
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        checkpoint.atomic_write(path, vanish_then_fail)
    assert path.read_bytes() == b"x"

"""Generator weight files: our deliverable (``.safetensors`` + ``.json`` spec) and teachers from the public pix2pix/CycleGAN code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dcdgan.checkpoint import atomic_write
from dcdgan.errors import UserError
from dcdgan.nets.generators import GeneratorSpec, build_generator

FORMAT = "dcdgan-generator/1"


def save_generator(path: Path, net: nn.Module, spec: GeneratorSpec, info: dict) -> None:
    """Write ``path`` (.safetensors, the spec also in its metadata) and ``path`` with .json: enough to rebuild the net."""
    description = {"format": FORMAT, "spec": spec.to_dict(), **info}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"dcdgan": json.dumps(description)}))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(description, indent=2) + "\n"))


def read_description(path: Path) -> dict:
    """The spec/info of a saved generator: the .json beside it, else the safetensors metadata."""
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            description = json.loads(side.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{side}: invalid JSON ({err})") from None
    else:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("dcdgan")
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path}: not a readable safetensors file ({err})") from None
        if raw is None:
            raise UserError(f"{path}: no {side.name} beside it and no dcdgan metadata inside; cannot tell the architecture")
        description = json.loads(raw)
    if description.get("format") != FORMAT or "spec" not in description:
        raise UserError(f"{side}: not a dcdgan generator description ({FORMAT})")
    return description


def load_generator(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a generator saved by ``save_generator``; returns (net in eval mode, description)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: generator weights not found")
    description = read_description(path)
    try:
        spec = GeneratorSpec(**description["spec"])
    except TypeError as err:
        raise UserError(f"{path}: bad generator spec ({err})") from None
    net = build_generator(spec)
    load_weights_into(net, path)
    return net.eval(), description


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors file, or a PyTorch state dict read with weights_only=True (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt archive, or a pickle that would need code to run
        raise UserError(f"{path}: not a loadable state dict ({type(err).__name__}: {str(err).splitlines()[0][:100]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict of tensors")
    return state


def _clean_public_keys(state: dict[str, Tensor], net: nn.Module) -> dict[str, Tensor]:
    """Undo what the public code's saving adds: DataParallel's ``module.`` prefix, and the running stats
    that PyTorch < 0.4 stored for InstanceNorm layers (pix2pix/CycleGAN ``__patch_instance_norm_state_dict``)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    instance_norms = {name for name, m in net.named_modules() if isinstance(m, nn.InstanceNorm2d) and not m.track_running_stats}
    legacy = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if not (k.rsplit(".", 1)[0] in instance_norms and k.rsplit(".", 1)[-1] in legacy)}


def load_weights_into(net: nn.Module, path: str | Path, what: str = "generator") -> None:
    """Load a state dict file into ``net`` (strict), accepting the public pix2pix/CycleGAN ``latest_net_G.pth`` layout."""
    load_state_into(net, read_state_dict(path), path, what)


def load_state_into(net: nn.Module, state: dict[str, Tensor], path: str | Path, what: str = "generator") -> None:
    """Load ``state`` (read from ``path``) into ``net`` (strict); UserError in one line when it does not fit."""
    state = _clean_public_keys(state, net)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: a different ngf, channel count or architecture
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err).splitlines()[0])
        raise UserError(f"{path}: does not fit the configured {what} ({detail[:200]})") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys (e.g. {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[0]})")
    if problems:
        raise UserError(f"{path}: does not fit the configured {what}: {'; '.join(problems)}")

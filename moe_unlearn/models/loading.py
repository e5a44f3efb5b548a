"""A version's files -> the composed model: every file checked against its manifest's sha256 first.

`compose` builds the mixture from tensors (a build evaluates what it has just trained this way);
`load_version` reads version n from disk; `CurrentModel` keeps the version `current` names in memory
and reloads it when the pointer moves (the CLI, the Python API and every server worker use it).
"""

import hashlib
from pathlib import Path

import torch

from moe_unlearn.config import Config, MixingConfig, config_from_yaml
from moe_unlearn.errors import UserError
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.mixing import from_manifest as mixing_from_manifest
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.models.router import FeatureRouter, Router, feature_size
from moe_unlearn.rundir import (
    BASE_FILE,
    CONFIG_FILE,
    ROUTER_DIR,
    expert_file,
    read_current,
    read_manifest,
    stage_file,
    version_dir,
)
from moe_unlearn.storage.versions import load_tensors

Tensors = dict[str, torch.Tensor]


def compose(
    cfg: Config,
    experts: dict[str, Tensors],
    router_weights: Tensors,
    base: Tensors | None = None,
    mixing: tuple[MixingConfig, int] | None = None,
) -> MixtureOfExperts:
    """The composed model from tensors (expert name -> state dict, final router stage, the base model's
    if any), mixed by `mixing` ((rule, router top-k); default: the config's)."""
    modules = {name: _transformer(cfg, tensors) for name, tensors in experts.items()}
    if "embed.weight" in router_weights:  # the byte router; a FeatureRouter has only its head
        router = Router(cfg.model.router, n_experts=len(experts))
    else:
        d_in = feature_size(cfg.model.expert.d_model)
        if router_weights["mlp.0.weight"].shape[-1] != d_in:
            raise UserError(
                "the router reads base features of an older layout (without the byte n-grams); "
                "run `moe-unlearn train` (or train.py) to retrain its stages"
            )
        router = FeatureRouter(cfg.model.router, d_in, n_experts=len(experts))
    router.load_state_dict(router_weights)
    rule, top_k = mixing or (cfg.model.mixing, cfg.model.router.top_k)
    base_model = _transformer(cfg, base) if base is not None else None
    return MixtureOfExperts(experts=modules, router=router, top_k=top_k, mixing=rule, base=base_model).eval()


def _transformer(cfg: Config, tensors: Tensors) -> ByteTransformer:
    model = ByteTransformer(cfg.model.expert)
    model.load_state_dict(tensors)
    return model


def split_stage(tensors: Tensors) -> tuple[Tensors, Tensors]:
    """A router stage file's tensors -> (router weights, accumulated Fisher)."""
    weights = {k.removeprefix("router."): v for k, v in tensors.items() if k.startswith("router.")}
    fisher = {k.removeprefix("fisher."): v for k, v in tensors.items() if k.startswith("fisher.")}
    return weights, fisher


def join_stage(weights: Tensors, fisher: Tensors) -> Tensors:
    """(router weights, accumulated Fisher) -> the tensors of a router stage file."""
    return {**{f"router.{k}": v for k, v in weights.items()}, **{f"fisher.{k}": v for k, v in fisher.items()}}


def load_version(run_dir: Path, n: int) -> tuple[MixtureOfExperts, dict]:
    """Load version n, checking the config and every model file against its manifest's sha256."""
    vdir = version_dir(run_dir, n)
    manifest = read_manifest(vdir)
    config_path = vdir / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"missing config file {config_path}")
    if hashlib.sha256(config_path.read_bytes()).hexdigest() != manifest["config_file_sha256"]:
        raise UserError(f"corrupt config file {config_path}: sha256 does not match the manifest")
    cfg = config_from_yaml(config_path.read_text())
    files = manifest["files"]
    experts = {e: load_tensors(vdir / expert_file(e), files[expert_file(e)]["sha256"]) for e in manifest["experts"]}
    last = stage_file(len(manifest["experts"]) - 1)
    for path, entry in files.items():  # intermediate router stages are only read by a rebuild; check them now
        if path.startswith(f"{ROUTER_DIR}/") and path != last:
            load_tensors(vdir / path, entry["sha256"])
    weights, _ = split_stage(load_tensors(vdir / last, files[last]["sha256"]))
    base = load_tensors(vdir / BASE_FILE, files[BASE_FILE]["sha256"]) if BASE_FILE in files else None
    return compose(cfg, experts, weights, base, mixing_from_manifest(manifest)), manifest


class CurrentModel:
    """The version `current` names, loaded once and reloaded when the pointer moves. `get` reads the
    pointer on every call (a server calls it once per batch)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._loaded: tuple[int, MixtureOfExperts, dict] | None = None

    def get(self) -> tuple[MixtureOfExperts, dict]:
        """(model, manifest) of the served version; a UserError when there is none or it is corrupt."""
        current = read_current(self.run_dir)
        if current is None:
            raise UserError(f"no trained model in {self.run_dir}: run `moe-unlearn train` first")
        if self._loaded is None or self._loaded[0] != current:
            try:
                self._loaded = (current, *load_version(self.run_dir, current))
            except UserError:
                if read_current(self.run_dir) == current:
                    raise
                return self.get()  # a job switched versions while we read the old one: read the new one
        return self._loaded[1], self._loaded[2]

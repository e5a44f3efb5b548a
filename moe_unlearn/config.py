"""Structured configuration: dataclasses with defaults, YAML in `configs/`, dotlist overrides.

`load_config` reads `configs/default.yaml`, merges an optional `--config` file on top, then
`key=value` overrides, all in omegaconf struct mode so a typo is an error instead of a silent no-op.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from moe_unlearn.data.corpus import CANARY_MAX_BYTES
from moe_unlearn.errors import UserError

# The repository's configs/ (the package is installed in editable mode); the dataclass defaults below
# mirror configs/default.yaml, so an installed copy without the repository still has the same defaults.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


@dataclass
class CorpusConfig:
    domains: int = 4  # built-in domains (1..16)
    records_per_domain: int = 1000  # records generated per domain
    seed: int = 0  # corpus generator seed (independent of the training seed)
    canaries: int = 0  # canary records with a random secret, spread over the domains
    canary_repeats: int = 1  # times each canary is inserted (1..10)
    base_domains: int = 4  # built-in domains after the first `domains` written as base sources (0: none)
    base_records: int = 0  # more records of each of the `domains`, in one base source `public` (0: none)


@dataclass
class DataConfig:
    builtin: bool = True  # write the built-in corpus into a new run directory's store
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    heldout_fraction: float = 0.1  # share of each source held out (seeded hash of the record id)
    eval_records: int = 100  # held-out records per source scored after training (reporting only)
    base_sources: list[str] = field(default_factory=list)  # sources that must have the role base (ingest --role)


@dataclass
class ExpertSpec:
    name: str = MISSING  # expert name (seeds are keyed by it)
    sources: list[str] = field(default_factory=list)  # sources whose records it trains on


@dataclass
class ExpertModelConfig:
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads
    d_model: int = 128  # embedding width
    block_size: int = 256  # bytes per chunk: records are cut into chunks of this many bytes
    dropout: float = 0.0  # dropout; any value is deterministic (seeded), 0 is fastest


@dataclass
class RouterModelConfig:
    d_model: int = 64  # byte embedding width
    kernel: int = 4  # causal convolution width: n-gram features of the last `kernel` bytes
    hidden: int = 128  # MLP width on top of the running mean of features
    top_k: int = 2  # experts mixed per byte (renormalised over the chosen ones)
    features: str = "auto"  # what it reads: bytes (its own n-gram features), base (a head on the base's), auto


@dataclass
class MixingConfig:
    rule: str = "posterior"  # posterior (router prior x likelihood of the bytes so far) or router (its top-k)
    decay: float = 0.98  # posterior: per-byte decay of the evidence, so a text can change domain (1: none)
    keep: int = 2  # posterior: candidates kept once the others hold less than `threshold` of the weight
    threshold: float = 0.01  # posterior: pruning threshold (0: never prune)
    prune_after: int = 32  # posterior: bytes of a chunk before pruning may start
    base_prior: float = 0.1  # posterior: prior weight of the base model among the candidates (with a base)
    prior_temperature: float = 4.0  # posterior: the router's logits are divided by it (1: as trained)


@dataclass
class ModelConfig:
    expert: ExpertModelConfig = field(default_factory=ExpertModelConfig)
    router: RouterModelConfig = field(default_factory=RouterModelConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)  # how experts are combined (not a trained part)


@dataclass
class OptimConfig:
    lr: float = 3e-3  # peak learning rate (AdamW), linear warm-up then cosine decay
    weight_decay: float = 0.01
    warmup_steps: int = 20
    batch_size: int = 4  # longest examples per step: a step holds up to batch_size * longest bytes
    max_epochs: int = 2  # passes over the training records
    max_steps: int = -1  # stop after this many steps (-1: no limit)
    grad_clip: float = 0.0  # clip the gradient's global norm to this (0: no clipping)


@dataclass
class RouterTrainConfig(OptimConfig):
    prefix_bytes: int = 160  # router stages train on the first bytes of each record
    label_stride: int = 4  # classify every n-th position of a prefix (and its last)
    stage_records: int = 600  # the stage's own expert: a seeded sample of its retained records (0: all)
    replay_records: int = 2400  # retained records of the earlier experts replayed per stage, shared evenly
    ewc_lambda: float = 1.0  # EWC penalty strength
    ewc_gamma: float = 1.0  # online EWC decay of the accumulated Fisher
    fisher_samples: int = 16  # records per stage used for the exact per-sample Fisher
    balance: str = "auto"  # each expert's records weigh the same in a stage's loss (experts) or not (none);
    # auto: experts for a head on base features, none for the byte router (as before)
    head_batch_size: int = 256  # rows per step of a stage on base features (batch_size: the byte router's)
    head_min_steps: int = 30  # a stage on base features takes at least this many steps (more epochs when few rows)

    def balanced(self, reads_features: bool) -> bool:
        """Whether stages weigh each expert's records equally (`balance`, auto resolved by router kind)."""
        return self.balance == "experts" or (self.balance == "auto" and reads_features)


@dataclass
class TrainConfig:
    experts: list[str] | None = None  # train only these experts (others reused); null: all as needed
    expert: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, grad_clip=1.0, max_epochs=3))
    base: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, grad_clip=1.0))  # with base sources
    frozen: list[str] = field(default_factory=list)  # experts branched from the base keep these parts' weights
    router: RouterTrainConfig = field(
        default_factory=lambda: RouterTrainConfig(lr=3e-2, warmup_steps=10, batch_size=128, max_epochs=3)
    )


@dataclass
class TrainerConfig:
    accelerator: str = "auto"  # Lightning accelerator: auto, cpu, gpu
    devices: int = 1  # devices per node
    num_nodes: int = 1
    strategy: str = "auto"  # auto, ddp, ...
    precision: str = "32-true"  # 32-true on CPU; bf16-mixed on GPUs
    compile: bool = False  # torch.compile the experts' forward pass (GPU; on CPU it needs a C++ compiler)
    threads: int = 2  # torch.set_num_threads on CPU (part of the exactness contract)
    progress_bar: bool = True  # rich progress bars
    log_every_n_steps: int = 10


@dataclass
class Config:
    seed: int = 1234  # root of every seed (each keyed by the expert or stage name)
    data: DataConfig = field(default_factory=DataConfig)
    experts: list[ExpertSpec] = field(default_factory=list)  # source -> expert map; empty: one per source
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# Keys that change how a run is carried out but not the tensors it produces. The built-in corpus
# settings and the source -> expert map (`experts`) only matter when a run directory is created (then
# the registry is the truth); artefacts record their expert's name and the ids they trained on.
TOP_LEVEL_NON_SEMANTIC = ("experts",)
NON_SEMANTIC_KEYS = (
    ("train", "experts"),
    ("trainer", "progress_bar"),
    ("trainer", "log_every_n_steps"),
    ("data", "builtin"),
    ("data", "corpus"),
    ("data", "eval_records"),
    ("data", "base_sources"),  # a check on the registry, whose roles are the truth
    ("model", "mixing"),  # inference only: the manifest records it beside the files
)


# Keys added after run directories existed, each with the value that reproduces the behaviour from before
# it: left out of the hash at that value, so an upgrade does not make every trained file look stale (a
# forget would then retrain every expert).
ADDED_KEYS = {
    ("trainer", "compile"): False,
    ("model", "router", "features"): "auto",  # auto without a base is the byte router of before
    ("train", "base"): asdict(TrainConfig().base),  # only trains something when the registry has base sources
    ("train", "frozen"): [],
    ("train", "router", "balance"): "auto",  # auto without a base is the byte router's plain loss of before
    ("train", "router", "head_batch_size"): 256,  # read by heads on base features only, whose stages record it
    ("train", "router", "head_min_steps"): 30,  # the same
}


def load_config(config_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults from `configs/default.yaml`, then `config_path` merged on top, then `key=value` overrides."""
    try:
        cfg = OmegaConf.structured(Config)
        OmegaConf.set_struct(cfg, True)
        if DEFAULT_CONFIG.is_file():
            cfg = OmegaConf.merge(cfg, OmegaConf.load(DEFAULT_CONFIG))
        if config_path is not None:
            if not Path(config_path).is_file():
                raise UserError(f"config file not found: {config_path}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(config_path))
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise UserError(f"override {bad[0]!r} is not of the form key=value (e.g. model.expert.d_model=64)")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        config: Config = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, yaml.YAMLError) as e:  # YAML: a value such as "," or a broken file
        raise UserError(f"bad config: {_one_line(e)}") from None
    validate(config)
    return config


def config_from_yaml(text: str) -> Config:
    """A config saved next to a model version (already resolved), read back in struct mode. One saved
    before `model.mixing` existed mixed by the router's top-k, and keeps doing so; one saved before
    `prior_temperature` existed used the router's prior as trained (1)."""
    saved = OmegaConf.create(text)
    cfg = OmegaConf.merge(OmegaConf.structured(Config), saved)
    if "model" in saved and "mixing" not in saved.model:
        cfg.model.mixing.rule = "router"
    elif "model" in saved and "prior_temperature" not in saved.model.mixing:
        cfg.model.mixing.prior_temperature = 1.0
    return OmegaConf.to_object(cfg)


def to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def config_hash(config: Config) -> str:
    """sha256 of the parts of the config that determine the trained tensors."""
    data = OmegaConf.to_container(OmegaConf.structured(config))
    for section, key in NON_SEMANTIC_KEYS:
        data[section].pop(key)
    for key in TOP_LEVEL_NON_SEMANTIC:
        data.pop(key)
    for path, before in ADDED_KEYS.items():
        *parents, key = path
        section = data
        for name in parents:
            section = section[name]
        if section[key] == before:
            section.pop(key)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def validate(config: Config) -> None:
    """Checks omegaconf's types cannot express; each failure is one clear line."""
    m, c = config.model, config.data.corpus
    checks = [
        (1 <= c.domains <= 16, f"data.corpus.domains must be 1..16, got {c.domains}"),
        (c.base_domains >= 0, f"data.corpus.base_domains must be 0 or more, got {c.base_domains}"),
        (c.base_records >= 0, f"data.corpus.base_records must be 0 or more, got {c.base_records}"),
        (
            c.domains + c.base_domains <= 16,
            f"data.corpus.domains + data.corpus.base_domains must be at most 16, got {c.domains} + {c.base_domains}: "
            "set data.corpus.base_domains=0 (or a base of the same domains: data.corpus.base_records=N)",
        ),
        (1 <= c.canary_repeats <= 10, f"data.corpus.canary_repeats must be 1..10, got {c.canary_repeats}"),
        (0.0 <= config.data.heldout_fraction < 1.0, "data.heldout_fraction must be in [0, 1)"),
        (m.expert.n_head >= 1, f"model.expert.n_head must be at least 1, got {m.expert.n_head}"),
        (
            m.expert.n_head < 1 or m.expert.d_model % m.expert.n_head == 0,
            "model.expert.d_model must be divisible by model.expert.n_head",
        ),
        (m.expert.block_size >= 8, "model.expert.block_size must be at least 8"),
        (
            c.canaries == 0 or m.expert.block_size >= CANARY_MAX_BYTES,
            f"data.corpus.canaries needs model.expert.block_size >= {CANARY_MAX_BYTES} (a canary must fit in one "
            f"block for its exposure to be measured), got {m.expert.block_size}",
        ),
        (m.router.top_k >= 1, "model.router.top_k must be at least 1"),
        (
            config.train.router.balance in ("auto", "experts", "none"),
            f"train.router.balance must be auto, experts or none, got {config.train.router.balance!r}",
        ),
        (
            m.router.features in ("auto", "bytes", "base"),
            f"model.router.features must be auto, bytes or base, got {m.router.features!r}",
        ),
        (
            m.mixing.rule in ("router", "posterior"),
            f"model.mixing.rule must be router or posterior, got {m.mixing.rule!r}",
        ),
        (0.0 < m.mixing.decay <= 1.0, "model.mixing.decay must be in (0, 1]"),
        (m.mixing.keep >= 1, "model.mixing.keep must be at least 1"),
        (0.0 <= m.mixing.threshold < 1.0, "model.mixing.threshold must be in [0, 1)"),
        (m.mixing.prune_after >= 0, "model.mixing.prune_after must be 0 or more"),
        (0.0 < m.mixing.base_prior < 1.0, "model.mixing.base_prior must be in (0, 1)"),
        (m.mixing.prior_temperature > 0, "model.mixing.prior_temperature must be above 0"),
        (config.trainer.threads >= 1, "trainer.threads must be at least 1"),
        (config.train.router.prefix_bytes >= 1, "train.router.prefix_bytes must be at least 1"),
        (config.train.router.label_stride >= 1, "train.router.label_stride must be at least 1"),
        (config.train.router.stage_records >= 0, "train.router.stage_records must be 0 (all) or more"),
        (config.train.router.replay_records >= 0, "train.router.replay_records must be 0 or more"),
    ]
    for opt, name in [
        (config.train.expert, "train.expert"),
        (config.train.base, "train.base"),
        (config.train.router, "train.router"),
    ]:
        checks.append((opt.batch_size >= 1, f"{name}.batch_size must be at least 1"))
        checks.append((opt.max_epochs >= 1, f"{name}.max_epochs must be at least 1"))
    checks.append((config.train.router.head_batch_size >= 1, "train.router.head_batch_size must be at least 1"))
    checks.append((config.train.router.head_min_steps >= 0, "train.router.head_min_steps must be at least 0"))
    names = [e.name for e in config.experts]
    checks.append((len(names) == len(set(names)), f"experts: duplicate expert name in {names}"))
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # omegaconf appends "full_key: ..., object_type=..." lines; the first line says what is wrong.
    first = lines[0] if lines else type(error).__name__
    key = next((line for line in lines if line.startswith("full_key:")), "")
    return f"{first} ({key})" if key and key.split(":", 1)[1].strip() not in first else first

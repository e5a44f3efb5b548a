"""How one training job runs: a seeded, deterministic Lightning Trainer with CSV logs and rich bars.

`train_expert` and `train_router_stage` are pure functions of (config, name, records, previous
stage): the same inputs give the same tensors, bit for bit on the same CPU and thread count.
"""

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.loggers import CSVLogger as FabricCSVLogger
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from moe_unlearn.config import Config, OptimConfig, RouterTrainConfig
from moe_unlearn.data.datamodule import (
    ExampleDataModule,
    expert_dataset,
    feature_dataset,
    keys_digest,
    router_dataset,
    stack_collate,
)
from moe_unlearn.data.examples import BOS
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import seed_for, unit_hash
from moe_unlearn.errors import UserError
from moe_unlearn.faults import armed, die
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.router import FeatureRouter, Router, feature_size
from moe_unlearn.training.distributed import check_followers, multi_process
from moe_unlearn.training.ewc import accumulate, fisher_diagonal
from moe_unlearn.training.modules import ExpertLM, RouterStage, build_optimizer

Tensors = dict[str, torch.Tensor]
EXAMPLES_FILE = "examples.json"

# Lightning's start-up chatter ("GPU available: False ...") and hints that do not apply to byte data
# held in memory; real warnings still show.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")  # inside Lightning itself
warnings.filterwarnings("ignore", message=".*distributed.nn.functional.all_gather is deprecated.*")  # Lightning's


class CrashMidTraining(L.Callback):
    """Dies (SIGKILL) after the second optimizer step of the fit it is given to."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= 2:
            die()


class ExamplesSeen(L.Callback):
    """Writes `path` (JSON, on global rank 0) at the end of the fit: for every epoch and process, the
    batches and examples it trained on and `keys_digest` of their keys, next to the digest of all the
    fit's examples. Keys are record ids with a chunk number, never text. Disjoint shares of the data
    have digests adding up to the digest of their union, so the file shows how DDP shared it out."""

    def __init__(self, path: Path, keys: list[str]):
        self.path, self.keys, self.epochs, self.seen = path, keys, [], None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen = [0, 0, 0]  # batches, examples, digest

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        keys = [self.keys[i] for i in trainer.train_dataloader.batch_sampler.current[batch_idx]]
        batches, examples, digest = self.seen
        self.seen = [batches + 1, examples + len(keys), (digest + keys_digest(keys)) % 2**63]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seen = pl_module.all_gather(torch.tensor(self.seen, device=pl_module.device)).view(-1, 3).tolist()
        ranks = [
            {"rank": r, "batches": b, "examples": e, "keys_digest": f"{d:016x}"} for r, (b, e, d) in enumerate(seen)
        ]
        self.epochs.append({"epoch": trainer.current_epoch, "ranks": ranks})

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            data = {"examples": len(self.keys), "keys_digest": f"{keys_digest(self.keys):016x}"}
            report = {"world_size": trainer.world_size, "data": data, "epochs": self.epochs}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(report, indent=2) + "\n")


class TrainingBar(RichProgressBar):
    """Lightning's rich progress bar, moved on every `every`-th training batch and at the end of an epoch
    or of `max_steps`. On every batch it cost ~5% of a default expert's 25 ms step on 2 CPU cores
    (bench/train_overhead.py), more than the rest of Lightning; the metrics it shows change only on the
    steps the logger writes, every `log_every_n_steps`. It draws on stderr, as progress should: stdout
    carries results (`--json`: one JSON document and nothing else)."""

    def __init__(self, every: int):
        super().__init__(leave=True, console_kwargs={"stderr": True})
        self.every = max(1, every)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last = batch_idx + 1 == self.total_train_batches or trainer.global_step == trainer.max_steps
        if (batch_idx + 1) % self.every == 0 or last:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def training_callbacks(kind: str) -> list[L.Callback]:
    """The crash callback for this fit ("expert", "base" or "router"), only when a test asks for it here."""
    return [CrashMidTraining()] if armed(f"mid-{kind}-training" if kind != "router" else "mid-router-stage") else []


def configure_torch(cfg: Config) -> None:
    """Thread count from the config, deterministic kernels on CPU (part of the exactness contract)."""
    torch.set_num_threads(cfg.trainer.threads)
    if multi_process(cfg):  # else Lightning's DDP sets torch's threads to cores / processes
        os.environ.setdefault("OMP_NUM_THREADS", str(cfg.trainer.threads))
    if on_cpu(cfg):
        torch.use_deterministic_algorithms(True)


def on_cpu(cfg: Config) -> bool:
    return cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available()


def fit(module: L.LightningModule, data: ExampleDataModule, cfg: Config, optim: OptimConfig, log_dir: Path, name: str):
    """Run one Lightning fit: seeded by the caller, no checkpoints, metrics to `log_dir/name/metrics.csv`
    (and, for an ExampleDataModule, what each process trained on to `log_dir/name/examples.json`)."""
    check_followers(cfg)
    bar = cfg.trainer.progress_bar
    callbacks = ([TrainingBar(cfg.trainer.log_every_n_steps)] if bar else []) + training_callbacks(name.split("-")[0])
    if isinstance(data, ExampleDataModule):
        callbacks.append(ExamplesSeen(log_dir / name / EXAMPLES_FILE, data.dataset.keys))
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=cfg.trainer.strategy,
        precision=cfg.trainer.precision,
        max_epochs=optim.max_epochs,
        max_steps=optim.max_steps,
        gradient_clip_val=optim.grad_clip or None,
        deterministic=on_cpu(cfg),
        logger=CSVLogger(log_dir, name=name, version=""),
        default_root_dir=log_dir,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bar,
        callbacks=callbacks,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        use_distributed_sampler=False,  # LengthBucketBatchSampler deals batches to ranks, without padding
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)


def fit_head(
    module: RouterStage, data: ExampleDataModule, cfg: Config, optim: RouterTrainConfig, log_dir: Path, name: str
):
    """A FeatureRouter stage's fit in a Lightning Fabric loop on one device: the steps `fit` takes (at least
    `optim.head_min_steps`: more epochs over a small stage), and so, above that floor, the same weights
    (tests/training/test_trainer.py compares them): the same batches in the same order,
    AdamW with its schedule over the same step count, and per step the loss, zero_grad, backward, the
    gradient clip, the update and the scheduler's step; metrics go to `log_dir/name/metrics.csv` on the
    steps the Trainer would write. A stage is a head of ~20k parameters trained for a few dozen steps on
    stored features: under the Trainer, its fixed cost and per-step hooks took about three quarters of
    a stage (0.16 s of fit for 18 steps of ~2 ms; AMD EPYC, 2 threads). Router stages run in one process
    (../shared/DESIGN.md, "Scale"): DDP followers skip them."""
    every = cfg.trainer.log_every_n_steps
    fabric = L.Fabric(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        loggers=FabricCSVLogger(log_dir, name=name, version="", flush_logs_every_n_steps=10**9),
    )
    loader = data.train_dataloader()
    per_epoch = len(loader.batch_sampler)
    total = per_epoch * optim.max_epochs  # max_epochs >= 1 (config.py); max_steps -1: no limit
    # A floor on the steps: a stage of a few hundred records is a handful of steps an epoch, too few for
    # the head to move from its start (K = 2, 400 records a domain: every prefix routed to one expert).
    total = max(total, optim.head_min_steps)
    total = min(total, optim.max_steps) if optim.max_steps >= 0 else total
    module.to_device(fabric.device)
    fabric.setup_module(module)  # onto the device; `module` is still called directly (one device, no DDP)
    cuda = fabric.device.type == "cuda"
    configured = build_optimizer(list(module.parameters()), optim, max(1, total), fused=cuda)
    optimizer, scheduler = fabric.setup_optimizers(configured["optimizer"]), configured["lr_scheduler"]["scheduler"]
    inputs, labels = (torch.stack(t) for t in zip(*data.dataset.examples, strict=True))  # one shape: a FeatureRouter's
    crash = armed("mid-router-stage")
    module.train()
    step, epoch = 0, 0
    while step < total:
        loader.batch_sampler.sampler.set_epoch(epoch)
        for batch in loader.batch_sampler:
            index = torch.tensor(batch)
            with fabric.autocast():
                loss, metrics = module.step_loss(fabric.to_device((inputs[index], labels[index])))
            optimizer.zero_grad()
            fabric.backward(loss)
            if optim.grad_clip:
                fabric.clip_gradients(module, optimizer, max_norm=optim.grad_clip, error_if_nonfinite=False)
            optimizer.step()
            scheduler.step()
            if (step + 1) % every == 0:
                fabric.log_dict({"epoch": epoch, **{k: v.item() for k, v in metrics().items()}}, step=step)
            step += 1
            if crash and step >= 2:
                die()
            if step >= total:
                break
        epoch += 1
    fabric.logger.finalize("success")


def balanced_weights(labels: list[int], n_experts: int) -> torch.Tensor:
    """Loss weights per router output that give every expert with records in `labels` the same total
    weight (mean 1 per record); 0 for an expert without any. Replay gives each earlier expert
    replay_records / i records against the stage's stage_records, so unweighted the newest expert
    outvotes every earlier one (a recency bias the stage then keeps)."""
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=n_experts).double()
    present = counts > 0
    weights = torch.zeros(n_experts, dtype=torch.double)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def train_expert(cfg: Config, name: str, records: list[Record], log_dir: Path, base: Tensors | None = None) -> Tensors:
    """An expert trained on exactly `records`, from the base model's weights when given (the parameters
    `train.frozen` names keep the base's values), else from its seeded initialisation."""
    return _train_transformer(cfg, "expert", name, records, log_dir, cfg.train.expert, base)


def train_base(cfg: Config, records: list[Record], log_dir: Path) -> Tensors:
    """The base model, from its seeded initialisation, on exactly `records` (the base sources')."""
    return _train_transformer(cfg, "base", "base", records, log_dir, cfg.train.base, None)


def _train_transformer(
    cfg: Config, kind: str, name: str, records: list[Record], log_dir: Path, optim: OptimConfig, init: Tensors | None
) -> Tensors:
    if not records:
        raise UserError(f"{kind} {name!r} has no training records (all held out or removed)")
    if cfg.trainer.compile and on_cpu(cfg) and not shutil.which(os.environ.get("CXX", "g++")):
        raise UserError("trainer.compile=true on a CPU needs a C++ compiler (g++, or $CXX); none found")
    seed = seed_for(cfg.seed, kind, name)
    L.seed_everything(seed, verbose=False)
    model = ByteTransformer(cfg.model.expert)
    if init is not None:
        model.load_state_dict(init)
        unknown = [p for p in cfg.train.frozen if not any(_within(n, p) for n, _ in model.named_parameters())]
        if unknown:
            raise UserError(f"train.frozen: {unknown[0]!r} names no part of the model (e.g. tok, pos, blocks.0)")
        for param_name, param in model.named_parameters():
            param.requires_grad_(not any(_within(param_name, prefix) for prefix in cfg.train.frozen))
    data = ExampleDataModule(expert_dataset(records, cfg.model.expert.block_size), optim.batch_size, seed)
    log_name = "base" if kind == "base" else f"expert-{name}"
    fit(ExpertLM(model, optim, cfg.trainer.compile), data, cfg, optim, log_dir, log_name)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _within(name: str, prefix: str) -> bool:
    """Whether parameter `name` is `prefix` or inside it ("blocks.0" holds "blocks.0.attn.qkv.weight")."""
    return name == prefix or name.startswith(prefix + ".")


def train_router_stage(
    cfg: Config,
    index: int,
    expert: str,
    previous: tuple[Tensors, Tensors] | None,
    records: list[Record],
    labels: list[int],
    log_dir: Path,
    features: dict[str, torch.Tensor] | None = None,
) -> tuple[Tensors, Tensors]:
    """Router stage `index` (for `expert`): grow the previous stage by one output, train it on
    `records` (the expert's plus replay) with EWC towards the previous stage, and return
    (weights, accumulated Fisher). Stage 0 has a single output and nothing to learn. With `features`
    (record id -> base features, training/features.py) the router is a FeatureRouter head on them."""
    rcfg, opt = cfg.model.router, cfg.train.router
    seed = seed_for(cfg.seed, "router", expert)
    L.seed_everything(seed, verbose=False)

    def new_router(n_experts: int) -> Router | FeatureRouter:
        if features is not None:
            return FeatureRouter(rcfg, feature_size(cfg.model.expert.d_model), n_experts)
        return Router(rcfg, n_experts=n_experts)

    if previous is None:
        router = new_router(1)
        anchor, fisher = {}, {}
    else:
        anchor, fisher = previous
        router = new_router(index)
        router.load_state_dict(anchor)
        router = router.grow(torch.Generator().manual_seed(seed))
    if index > 0:
        weights = balanced_weights(labels, index + 1) if opt.balanced(features is not None) else None
        stage = RouterStage(router, opt, anchor, fisher, opt.ewc_lambda, weights)
        if features is not None:
            examples = feature_dataset(records, labels, features)
            data = ExampleDataModule(examples, opt.head_batch_size, seed, collate=stack_collate)
            fit_head(stage, data, cfg, opt, log_dir, f"router-{index}")
        else:
            data = ExampleDataModule(
                router_dataset(records, labels, opt.prefix_bytes, opt.label_stride), opt.batch_size, seed
            )
            fit(stage, data, cfg, opt, log_dir, f"router-{index}")
    router = router.cpu()
    sample = sorted(records, key=lambda r: unit_hash(seed, "fisher", r.id))[: opt.fisher_samples]
    if features is not None:  # the decision after the whole prefix: the last probe (alone: rows are independent)
        inputs = [features[r.id][-1:] for r in sample]
    else:  # BOS + the whole prefix: the last position's decision has seen every byte of it
        inputs = [torch.tensor([BOS, *r.text.encode("utf-8")[: opt.prefix_bytes]]) for r in sample]
    weights = {k: v.detach().clone() for k, v in router.state_dict().items()}
    return weights, accumulate(fisher, fisher_diagonal(router, inputs), opt.ewc_gamma)

"""Approximate unlearning of one expert: the baselines that exact retraining is contrasted with.

Both methods start from the expert's current weights (which saw the forget set) and fine-tune them,
so the result is *not* the oracle: a version built this way is labelled approximate.

- gradient ascent: maximise the next-byte cross-entropy on the forget set's chunks; no retain term.
  Cheap, and typically degrades the expert on everything else too.
- nabla-tau (Trippa et al., arXiv 2403.14339): each step takes a forget batch and a retain batch and
  minimises  alpha * (L_val - L_forget)^2 + (1 - alpha) * L_retain,  where L_val is the mean loss of
  held-out records (what a never-seen record scores) under the current weights, recomputed at the
  start of every epoch; alpha decays linearly from NT_ALPHA towards 0 over the epochs. It pulls the
  forget loss to the held-out level instead of to infinity, while descending on retained data.

Both run through the project's `fit()` (Lightning, seeded, deterministic on CPU). Only numbers are
logged (losses, alpha), never record text.
"""

import dataclasses
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader

from moe_unlearn.config import Config, OptimConfig
from moe_unlearn.data.datamodule import ExampleDataModule, expert_dataset
from moe_unlearn.data.examples import IGNORE, pad_collate
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import replay_sample, seed_for
from moe_unlearn.errors import UserError
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.training.modules import make_optimizer
from moe_unlearn.training.trainer import configure_torch, fit

Tensors = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]

METHODS = ("gradient-ascent", "nabla-tau")

# Gradient ascent: passes over the forget set's chunks, and the peak learning rate (AdamW with the
# expert's weight decay and batch size, no warm-up, cosine decay to a tenth, as in `make_optimizer`).
GA_EPOCHS = 5
GA_LR = 1e-4

# nabla-tau: passes over the forget set (one retain batch per forget batch), peak learning rate,
# starting alpha (the reference code's value for language data), held-out records sampled for L_val,
# and retained records sampled for the retain batches (which cycle through them across epochs).
NT_EPOCHS = 5
NT_LR = 1e-4
NT_ALPHA = 0.5
NT_VAL_RECORDS = 64
NT_RETAIN_RECORDS = 1024


def unlearn_expert(
    cfg: Config,
    expert: str,
    weights: Tensors,
    method: str,
    forget: list[Record],
    retain: list[Record],
    heldout: list[Record],
    log_dir: Path,
) -> Tensors:
    """The expert's new weights after approximately forgetting `forget` with `method` (see METHODS).

    `retain` are the expert's retained training records and `heldout` held-out records of its sources
    (both used by nabla-tau only). Same inputs, config and threads: the same tensors, bit for bit on CPU.
    """
    if method not in METHODS:
        raise UserError(f"unknown unlearning method {method!r}; choose one of {', '.join(METHODS)}")
    if not forget:
        raise UserError(f"nothing to forget: the forget set of expert {expert!r} is empty")
    configure_torch(cfg)
    seed = seed_for(cfg.seed, "approximate", method, expert)
    L.seed_everything(seed, verbose=False)
    model = ByteTransformer(cfg.model.expert)
    model.load_state_dict(weights)
    block, batch_size = cfg.model.expert.block_size, cfg.train.expert.batch_size
    forget_data = ExampleDataModule(_examples(forget, block, "forget", expert), batch_size, seed)

    if method == "gradient-ascent":
        optim = _optim(cfg, GA_LR, GA_EPOCHS)
        module, data = GradientAscent(model, optim), forget_data
    else:
        optim = _optim(cfg, NT_LR, NT_EPOCHS)
        val = _examples(replay_sample(heldout, seed, NT_VAL_RECORDS), block, "held-out", expert).examples
        val_batches = [pad_collate(val[i : i + batch_size]) for i in range(0, len(val), batch_size)]
        retain_sample = _examples(replay_sample(retain, seed, NT_RETAIN_RECORDS), block, "retained", expert)
        retain_data = ExampleDataModule(retain_sample, batch_size, seed)
        module, data = NablaTau(model, optim, val_batches, NT_ALPHA), ForgetRetainData(forget_data, retain_data)

    fit(module, data, cfg, optim, log_dir, f"expert-{expert}-{method}")
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def cross_entropy(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean next-byte cross-entropy (nats) over the batch's non-padding positions."""
    inputs, targets = batch
    logits = model(inputs)  # (B, T, 256)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


class GradientAscent(L.LightningModule):
    """Maximise the cross-entropy of the forget set's chunks; logs train/forget_loss."""

    def __init__(self, model: nn.Module, optim: OptimConfig):
        super().__init__()
        self.model, self.optim = model, optim

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = cross_entropy(self.model, batch)
        self.log("train/forget_loss", loss, prog_bar=True)
        return -loss

    def configure_optimizers(self):
        return make_optimizer(self, self.optim)


class NablaTau(L.LightningModule):
    """alpha * (L_val - L_forget)^2 + (1 - alpha) * L_retain per step, on {"forget", "retain"} batches.

    L_val (mean held-out loss over `val_batches`, no gradient) and alpha = alpha0 * (1 - epoch / epochs)
    are set at the start of every epoch (the reference code decays alpha the same way, and recomputes
    L_val every 5 epochs). The two-sided square is the reference code's language-model variant: a
    forget loss above L_val is pulled back down too (its image variant squares relu(L_val - L_forget)).
    """

    def __init__(self, model: nn.Module, optim: OptimConfig, val_batches: list[Batch], alpha0: float):
        super().__init__()
        self.model, self.optim, self.val_batches, self.alpha0 = model, optim, val_batches, alpha0
        self.alpha, self.val_loss = alpha0, 0.0

    def on_train_epoch_start(self) -> None:
        self.alpha = self.alpha0 * (1 - self.current_epoch / self.trainer.max_epochs)
        self.val_loss = self.heldout_loss()
        self.log_dict({"train/alpha": self.alpha, "train/val_loss": self.val_loss})

    @torch.no_grad()
    def heldout_loss(self) -> float:
        """Mean cross-entropy per byte of the held-out sample under the current weights (eval mode)."""
        self.model.eval()
        total, n = 0.0, 0
        for inputs, targets in self.val_batches:
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            logits = self.model(inputs)  # (B, T, 256)
            total += F.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum"
            ).item()
            n += int((targets != IGNORE).sum())
        self.model.train()
        return total / n

    def training_step(self, batch: dict[str, Batch], batch_idx: int) -> torch.Tensor:
        forget = cross_entropy(self.model, batch["forget"])
        retain = cross_entropy(self.model, batch["retain"])
        loss = self.alpha * (self.val_loss - forget) ** 2 + (1 - self.alpha) * retain
        self.log_dict({"train/loss": loss, "train/forget_loss": forget, "train/retain_loss": retain}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return make_optimizer(self, self.optim)


class ForgetRetainData(L.LightningDataModule):
    """Batches {"forget": ..., "retain": ...}: an epoch is one pass over the forget set (in its hashed
    order), each forget batch paired with the next retained batch. The retained batches run on across
    epochs, cycling through their sample, instead of starting again at every forget epoch."""

    def __init__(self, forget: ExampleDataModule, retain: ExampleDataModule):
        super().__init__()
        self.forget, self.retain = forget, retain

    def train_dataloader(self) -> CombinedLoader:
        for part in (self.forget, self.retain):
            part.trainer = self.trainer  # each shards its own examples by rank
        loaders = {"forget": self.forget.train_dataloader(), "retain": Cycle(self.retain.train_dataloader())}
        return CombinedLoader(loaders, mode="min_size")  # the cycle has no length: the forget set sets it


class Cycle:
    """Endless batches of a hashed-order loader: epoch 0 of its order, then epoch 1, ... Iterating it
    again continues where the last iteration stopped."""

    def __init__(self, loader: DataLoader):
        self.loader = loader  # not named `sampler`: Lightning must not set the epoch of this one
        self.batches = self._endless()

    def _endless(self):
        epoch = 0
        while True:
            self.loader.batch_sampler.sampler.set_epoch(epoch)
            yield from self.loader
            epoch += 1

    def __iter__(self):
        return self.batches


def _examples(records: list[Record], block_size: int, what: str, expert: str):
    """The records' chunks as a dataset; a clear error when there are none (no records, or no text)."""
    data = expert_dataset(records, block_size)
    if not data.examples:
        raise UserError(f"expert {expert!r} has no {what} records with text (needed to unlearn approximately)")
    return data


def _optim(cfg: Config, lr: float, epochs: int) -> OptimConfig:
    """The expert's optimizer settings (batch size, weight decay) with this method's rate and length."""
    return dataclasses.replace(cfg.train.expert, lr=lr, max_epochs=epochs, max_steps=-1, warmup_steps=0)

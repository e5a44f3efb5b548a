"""LightningModules: what to compute when training an expert or a router stage.

The networks are plain `nn.Module`s injected from outside; these classes add the loss, the metrics
and the optimizer (AdamW, linear warm-up then cosine decay over the run's steps).
"""

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from moe_unlearn.config import OptimConfig
from moe_unlearn.data.examples import IGNORE
from moe_unlearn.training.ewc import ewc_penalty

LN2 = math.log(2)


def logged_step(module: L.LightningModule) -> bool:
    """Whether the logger writes this training step's metrics: Lightning writes on the steps whose count
    from 1 is a multiple of `log_every_n_steps`, the last value logged (logging on other steps wastes the
    work, or writes an older step's value)."""
    return (module.global_step + 1) % module.trainer.log_every_n_steps == 0


class ExpertLM(L.LightningModule):
    """Next-byte prediction for one expert; logs train/loss and train/bpb (bits per byte)."""

    def __init__(self, model: nn.Module, optim: OptimConfig, compile: bool = False):
        super().__init__()
        self.model, self.optim = model, optim
        # Kept out of the module tree: the compiled wrapper shares `model`'s parameters, and the saved
        # state dict must keep `model`'s own key names.
        self._forward = [torch.compile(model) if compile else model]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        logits = self._forward[0](inputs)  # (B, T, 256)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
        # Only on the steps the logger writes: on every step, two metrics and the progress bar's read of them
        # cost a few per cent of a small expert's step on a fast CPU.
        if logged_step(self):
            self.log("train/loss", loss, prog_bar=False)
            self.log("train/bpb", loss / LN2, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return make_optimizer(self, self.optim)


class RouterStage(L.LightningModule):
    """One router stage: classify every position's expert, plus the EWC penalty towards the previous
    stage (whose Fisher and weights are `fisher` and `anchor`; both empty for the first stage).
    `expert_weights` (one per output, or None: all 1) weigh each expert's examples in the loss."""

    def __init__(
        self,
        router: nn.Module,
        optim: OptimConfig,
        anchor: dict[str, torch.Tensor],
        fisher: dict[str, torch.Tensor],
        ewc_lambda: float,
        expert_weights: torch.Tensor | None = None,
    ):
        super().__init__()
        self.router, self.optim, self.ewc_lambda = router, optim, ewc_lambda
        self.anchor, self.fisher = anchor, fisher
        self.expert_weights = expert_weights

    def on_fit_start(self) -> None:
        self.to_device(self.device)

    def to_device(self, device: torch.device) -> None:
        """The stage's fixed tensors (EWC anchor and Fisher, expert weights) onto `device`."""
        self.anchor = {k: v.to(device) for k, v in self.anchor.items()}
        self.fisher = {k: v.to(device) for k, v in self.fisher.items()}
        if self.expert_weights is not None:
            self.expert_weights = self.expert_weights.to(device)

    def step_loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The training loss of one batch and a function giving its metrics (called on logged steps only)."""
        inputs, labels = batch
        # Only the labelled positions are classified: the MLP and head skip padding and unlabelled bytes.
        mask = labels != IGNORE
        if inputs.is_floating_point():  # a FeatureRouter's batch: base features, already computed
            logits = self.router.classify(inputs[mask])
        else:
            logits = self.router.classify(self.router.features(inputs)[mask])  # (N, n_experts)
        ce = F.cross_entropy(logits.float(), labels[mask], weight=self.expert_weights)
        ewc = ewc_penalty(self.router, self.anchor, self.fisher)

        def metrics() -> dict[str, torch.Tensor]:
            acc = (logits.argmax(-1) == labels[mask]).float().mean()
            return {"train/ce": ce, "train/ewc": ewc, "train/acc": acc}

        return ce + self.ewc_lambda / 2 * ewc, metrics

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, metrics = self.step_loss(batch)
        # A stage step takes ~15 ms; logging three metrics on every one of them cost ~15% of a stage.
        if logged_step(self):
            self.log_dict(metrics(), prog_bar=True)
        return loss

    def configure_optimizers(self):
        return make_optimizer(self, self.optim)


def make_optimizer(module: L.LightningModule, optim: OptimConfig) -> dict:
    """AdamW (decay on matrices only) with warm-up and cosine decay over the trainer's total steps."""
    total = max(1, int(module.trainer.estimated_stepping_batches))
    return build_optimizer(list(module.parameters()), optim, total, fused=module.device.type == "cuda")


def build_optimizer(parameters: list[nn.Parameter], optim: OptimConfig, total_steps: int, fused: bool) -> dict:
    """`make_optimizer` for any parameters and step count (plain-PyTorch loops use it too)."""
    params = [p for p in parameters if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=(0.9, 0.95), fused=fused)
    warmup = min(optim.warmup_steps, total_steps // 2)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

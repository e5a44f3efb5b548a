"""Benchmark: training throughput of our Lightning expert training against a plain PyTorch loop (not a test).

Trains one expert (the first domain's training records) with `train_expert` as users run it (Lightning,
CSV logs, the rich progress bar as the config sets it) and with a minimal loop over the same DataLoader
(`ExampleDataModule`: the same batches in the same order), the same seeded ByteTransformer, AdamW groups,
warm-up and cosine schedule (`make_optimizer`), gradient clipping and thread count. The two alternate,
`--reps` times each, the first of each pair swapping; both are warmed up first, untimed. Bytes/s counts
the batches' bytes (no padding) over the whole call, set-up included; the overhead is the plain loop's
median bytes/s over Lightning's, minus 1. Both runs end on the same weights (the largest difference is
printed), which shows they did the same work. --quick: 800 records per domain (dictd: 300 steps). With --data,
the first dictd dictionary (jargon) with configs/experiment/dictd.yaml.

    .venv/bin/python -m bench.train_overhead            # default config, 5 reps: ~5.5 min on 2 cores
    .venv/bin/python -m bench.train_overhead --quick    # ~2 min on 2 cores
"""

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from bench.common import machine_line, provenance, publish, report_defaults, report_options, save_figure, timed
from moe_unlearn.config import Config, load_config
from moe_unlearn.data.corpus import generate_corpus
from moe_unlearn.data.datamodule import ExampleDataModule, expert_dataset
from moe_unlearn.data.dictd import DICTIONARIES
from moe_unlearn.data.examples import IGNORE
from moe_unlearn.data.ingest import read_records
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import seed_for, split
from moe_unlearn.errors import UserError
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.training.distributed import multi_process
from moe_unlearn.training.modules import build_optimizer
from moe_unlearn.training.trainer import configure_torch, on_cpu, train_expert

QUICK = ["data.corpus.records_per_domain=800"]
QUICK_DICTD = ["train.expert.max_steps=300"]
TARGET = 0.05  # the largest acceptable overhead

Tensors = dict[str, torch.Tensor]


def plain_loop(cfg: Config, name: str, records: list[Record]) -> tuple[Tensors, int, int]:
    """`train_expert` without Lightning: (final weights, steps, bytes trained on)."""
    opt = cfg.train.expert
    seed = seed_for(cfg.seed, "expert", name)
    torch.manual_seed(seed)  # what L.seed_everything does for the model's initialisation
    device = torch.device("cpu" if on_cpu(cfg) else "cuda")
    model = ByteTransformer(cfg.model.expert).to(device)
    forward = torch.compile(model) if cfg.trainer.compile else model
    loader = ExampleDataModule(expert_dataset(records, cfg.model.expert.block_size), opt.batch_size, seed)
    loader = loader.train_dataloader()
    total = len(loader) * opt.max_epochs
    total = min(total, opt.max_steps) if opt.max_steps > 0 else total
    configured = build_optimizer(list(model.parameters()), opt, max(1, total), fused=device.type == "cuda")
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    params = [p for group in optimizer.param_groups for p in group["params"]]  # Lightning clips in this order
    bf16 = cfg.trainer.precision == "bf16-mixed"
    step, seen = 0, 0
    for epoch in range(opt.max_epochs):
        loader.batch_sampler.sampler.set_epoch(epoch)
        for inputs, targets in loader:
            if step == total:
                break
            seen += int((targets != IGNORE).sum())  # on the CPU copy: no device sync
            inputs, targets = inputs.to(device), targets.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = forward(inputs)  # (B, T, 256)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
            optimizer.zero_grad()
            loss.backward()
            if opt.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, step, seen


def markdown(report: dict) -> str:
    c = report["config"]
    reps = len(report["runs"]["lightning"])
    lines = [
        machine_line(report["machine"]),
        f"- Date: {report['date']}",
        f"- Config: {report['config_file']} + `{' '.join(report['overrides']) or '(no overrides)'}`: expert "
        f"{c['expert']} on {c['records']:,} records of {c['source']}, {c['steps']} steps, {c['bytes']:,} bytes a run, "
        f"batch {c['batch_size']}, precision {c['precision']}, progress bar {c['progress_bar']}",
        f"- Command: `{report['command']}`",
        "",
        "| training | " + " | ".join(f"run {i + 1} bytes/s" for i in range(reps)) + " | median bytes/s | median s |",
        "|---" * (reps + 3) + "|",
    ]
    for key, label in (("lightning", "Lightning `train_expert`"), ("plain", "plain PyTorch loop")):
        runs = report["runs"][key]
        per = " | ".join(f"{r['bytes_per_s']:,.0f}" for r in runs)
        median = report["median_bytes_per_s"][key]
        lines.append(f"| {label} | {per} | **{median:,.0f}** | {statistics.median(r['s'] for r in runs):.2f} |")
    met = "pass" if report["met"] else "FAIL"
    lines += [
        "",
        f"Lightning overhead: **{report['overhead']:+.1%}** (target at most {TARGET:.0%}: {met}); largest weight "
        f"difference between the two final models: {report['max_weight_difference']:.2e}.",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # object API: Agg, no pyplot state

    figure = Figure(figsize=(6, 3.5), layout="constrained")
    ax = figure.subplots()
    for key, label, colour in (("lightning", "Lightning train_expert", "C0"), ("plain", "plain PyTorch", "C1")):
        values = [r["bytes_per_s"] for r in report["runs"][key]]
        ax.plot(range(1, len(values) + 1), values, "o", color=colour, label=label)
        ax.axhline(report["median_bytes_per_s"][key], color=colour, linestyle="--", linewidth=1)
    ax.set_xticks(range(1, len(report["runs"]["plain"]) + 1))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("repetition")
    ax.set_ylabel("training bytes per second")
    ax.set_title(f"Lightning overhead {report['overhead']:+.1%} ({report['date'][:10]})")
    ax.legend(loc="lower right")
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=" ".join(QUICK))
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each, interleaved")
    report_options(
        parser,
        "train_overhead",
        "train on its first dictionary (jargon) with configs/experiment/dictd.yaml instead of the first "
        "built-in domain",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.expert.d_model=256")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    console = Console(stderr=True)
    suffix = report_defaults(args, "train_overhead")
    overrides = [*((QUICK_DICTD if args.data else QUICK) if args.quick else []), *args.overrides]
    cfg = load_config(args.config, overrides)
    if multi_process(cfg):
        raise UserError("train_overhead compares single-process training: set trainer.devices=1 trainer.num_nodes=1")
    if cfg.trainer.precision not in ("32-true", "bf16-mixed"):  # others need a gradient scaler in the plain loop
        raise UserError(f"train_overhead supports precision 32-true and bf16-mixed, not {cfg.trainer.precision}")
    configure_torch(cfg)
    c = cfg.data.corpus
    if args.data:
        source = DICTIONARIES[0]
        every = list(read_records(args.data / f"{source}.jsonl", source))
    else:
        every = generate_corpus(1, c.records_per_domain, c.seed)  # the first domain
        source = every[0].source
    records, _ = split(every, cfg.seed, cfg.data.heldout_fraction)

    runs, last = {"lightning": [], "plain": []}, {}
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-overhead-") as tmp:
        fits = {
            "lightning": lambda cfg: train_expert(cfg, source, records, Path(tempfile.mkdtemp(dir=tmp))),
            "plain": lambda cfg: plain_loop(cfg, source, records),
        }
        warm = replace(cfg, train=replace(cfg.train, expert=replace(cfg.train.expert, max_steps=3)))
        console.print("warm-up: 3 steps of each, untimed")
        for fit in fits.values():
            fit(warm)
        for rep in range(args.reps):
            for key in ["lightning", "plain"] if rep % 2 == 0 else ["plain", "lightning"]:
                last[key], seconds = timed(fits[key], cfg)
                runs[key].append({"s": round(seconds, 3)})
                console.print(f"rep {rep + 1}: {key} {seconds:.1f} s")
    weights, steps, n = last["plain"]
    difference = max((last["lightning"][k] - weights[k]).abs().max().item() for k in weights)
    for r in runs["lightning"] + runs["plain"]:
        r["bytes_per_s"] = round(n / r["s"])
    median = {key: statistics.median(r["bytes_per_s"] for r in rs) for key, rs in runs.items()}
    overhead = median["plain"] / median["lightning"] - 1
    e = cfg.model.expert
    report = {
        **provenance(args.config),
        "overrides": overrides,
        "config": {
            "source": source,
            "records": len(records),
            "expert": f"n_layer {e.n_layer} d_model {e.d_model} block {e.block_size}",
            "batch_size": cfg.train.expert.batch_size,
            "steps": steps,
            "bytes": n,
            "precision": cfg.trainer.precision,
            "progress_bar": cfg.trainer.progress_bar,
        },
        "runs": runs,
        "median_bytes_per_s": median,
        "overhead": overhead,
        "target": TARGET,
        "met": overhead <= TARGET,
        "max_weight_difference": difference,
    }
    colour = "green" if report["met"] else "red"
    console.print(f"[{colour}]Lightning overhead {overhead:+.1%} (target at most {TARGET:.0%})[/]")
    publish(report, markdown(report), args.out, plot, args.plots / f"train_overhead{suffix}.png", console)


if __name__ == "__main__":
    main()

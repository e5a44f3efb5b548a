"""The audit as files: audit.json (the numbers stored at forget time), audit.md (a before/after table
and a plain reading of it) and PNG plots, plus rows for a short console table.

The input is the audit dict only: numbers and counts, never record text or ids. Plots use
matplotlib's object API (`Figure`, Agg), so nothing touches pyplot's global state or a display.
"""

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moe_unlearn.rundir import AUDIT_FILES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ATTACKS = {"loss": "loss", "zlib": "zlib", "min_k": "Min-K%"}  # key in the dict -> name in the report
SPLITS = {"forget": "forget set", "retained": "retained set", "heldout": "held-out set"}
ALPHA = 0.05  # significance level the Markdown's wording uses for the canary test
DPI = 120


def write_report(out_dir: Path, audit: dict) -> list[Path]:
    """Write audit.json (the dict, indented, sorted keys), audit.md (readable Markdown) and the PNG plots
    into out_dir (created if missing); returns the paths written. Plots whose data is absent (e.g. no
    canaries) are skipped and the Markdown says so."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_text(json.dumps(audit, indent=2, sort_keys=True) + "\n")
    written = {"audit.json"}
    for name, plot in (("losses.png", _plot_losses), ("exposure.png", _plot_exposure), ("timings.png", _plot_timings)):
        figure = plot(audit)
        if figure is None:
            (out_dir / name).unlink(missing_ok=True)  # a stale plot from an earlier report would contradict audit.md
        else:
            figure.savefig(out_dir / name, dpi=DPI)
            written.add(name)
    (out_dir / "audit.md").write_text(_markdown(audit, written))
    written.add("audit.md")
    return [out_dir / name for name in AUDIT_FILES if name in written]


def summary_rows(audit: dict) -> list[tuple[str, str, str]]:
    """(measure, before, after) rows for a short console table, e.g. ("bits/byte forget set", "0.81", "1.92"),
    ("MIA AUC loss (n=200 a side)", "0.71 ± 0.03", "0.50 ± 0.03"), ("canary exposure inserted, mean bits", ...),
    ("never-inserted exposure, mean bits", ...), ("canaries extracted", "17/128", "0/128"),
    ("router agreement", "", "99.6%")."""
    rows = []
    for split, name in SPLITS.items():
        if bpb := audit["bits_per_byte"].get(split):
            rows.append((f"bits/byte {name}", _num(bpb["before"]), _num(bpb["after"])))
    membership = audit["membership"]
    sides = _sides_label(audit)
    for key, name in ATTACKS.items():
        if attack := membership["attacks"].get(key):
            rows.append((f"MIA AUC {name} ({sides})", _auc(attack["before"]), _auc(attack["after"])))
    for key, name in ATTACKS.items():
        if leak := (membership.get("privleak") or {}).get(key):
            rows.append((f"privleak {name}", _percent_change(leak["before"]), _percent_change(leak["after"])))
    if canaries := audit.get("canaries"):
        inserted, never = canaries["inserted"], canaries["never_inserted"]
        rows.append(("canary exposure inserted, mean bits", _bits(inserted["before"]), _bits(inserted["after"])))
        rows.append(("never-inserted exposure, mean bits", _bits(never["before"]), _bits(never["after"])))
        tests = canaries["tests"]
        rows.append(("inserted vs never-inserted, Mann-Whitney p", _p(tests["before"]), _p(tests["after"])))
        extracted = canaries["extracted"]
        of = extracted["of"]
        rows.append(("canaries extracted", f"{extracted['before']}/{of}", f"{extracted['after']}/{of}"))
    if router := audit.get("router"):
        rows.append(("router agreement", "", f"{router['agreement']:.1%}"))
    return rows


# Formatting ------------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _auc(result: dict | None) -> str:
    return "n/a" if result is None else f"{result['auc']:.2f} ± {result['se']:.2f}"


def _percent_change(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1f}%"


def _p(test: dict | None) -> str:
    return "n/a" if test is None or test.get("p_value") is None else f"{test['p_value']:.2g}"


def _mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def _bits(values: list[float] | None) -> str:
    return _num(_mean(values), 1)


def _seconds(x: float) -> str:
    return f"{x:.1f} s"


def _scores(audit: dict, side: str, when: str, attack: str = "loss") -> list[float]:
    """Per-text membership scores of one side ("members" or "nonmembers"), [] where absent."""
    scores = audit["membership"].get("scores") or {}
    return ((scores.get(side) or {}).get(when) or {}).get(attack) or []


def _sides(audit: dict) -> tuple[int, int]:
    """Texts a side in the membership test: from the stored scores, else from the counts."""
    members, nonmembers = len(_scores(audit, "members", "before")), len(_scores(audit, "nonmembers", "before"))
    if members and nonmembers:
        return members, nonmembers
    counts = audit.get("counts") or {}
    return counts.get("members", 0), counts.get("nonmembers", 0)


def _sides_label(audit: dict) -> str:
    members, nonmembers = _sides(audit)
    return f"n={members} a side" if members == nonmembers else f"n={members} forgotten / {nonmembers} never seen"


# Markdown --------------------------------------------------------------------------------------


def _markdown(audit: dict, plots: set[str]) -> str:
    versions = audit["versions"]
    lines = [
        f"# Audit of forget request {audit['request']} (method: {audit['method']})",
        "",
        f"Model version {versions['before']} (before the forget) against version {versions['after']} (after).",
        "",
        f"| Measure | Before (v{versions['before']}) | After (v{versions['after']}) |",
        "|---|---|---|",
        *(f"| {measure} | {before} | {after} |" for measure, before, after in summary_rows(audit)),
        "",
        "## Reading",
        "",
    ]
    for paragraph in _reading(audit):
        lines += [paragraph, ""]
    lines += ["## Plots", ""]
    for paragraph in _plot_lines(audit, plots):
        lines += [paragraph, ""]
    lines += ["## Counts and uncertainty", ""]
    lines += _notes(audit)
    return "\n".join(lines) + "\n"


def _reading(audit: dict) -> list[str]:
    """Paragraphs that say what the numbers show, and no more."""
    paragraphs = (
        _method_paragraph(audit),
        _membership_paragraph(audit),
        _canary_paragraph(audit),
        _other_paragraph(audit),
    )
    return [p for p in paragraphs if p]


def _method_paragraph(audit: dict) -> str:
    after = audit["versions"]["after"]
    verify = (audit.get("checks") or {}).get("verify")
    if not audit["exact"]:
        return (
            f"**Method {audit['method']} is approximate: version {after} is not oracle-equal.** It was not "
            "retrained without the forgotten records, so they may still influence it; these measures show "
            "what is left detectable, they do not prove removal."
        )
    text = (
        f"The method ({audit['method']}) is exact: by construction version {after} is the model that training from "
        "scratch without the forgotten records gives (only the files that saw them were retrained)."
    )
    if verify is None:
        return text + " This was not re-verified for this report."
    if verify["equal"]:
        seconds = verify.get("oracle_seconds")
        took = f" ({_seconds(seconds)})" if seconds is not None else ""
        return text + f" Verified: an independent retrain without the records{took} gave bit-identical weights."
    return text + (
        f" **Verification failed: an independent retrain without the records gave different weights, so version "
        f"{after} is not shown to be oracle-equal.**"
    )


def _membership_paragraph(audit: dict) -> str:
    membership = audit["membership"]
    attacks = {key: membership["attacks"][key] for key in ATTACKS if key in membership["attacks"]}
    if not attacks:
        return "No membership-inference attack was run."
    strongest = max(attacks, key=lambda key: attacks[key]["before"]["auc"])
    before = attacks[strongest]["before"]
    if before["auc"] - 0.5 > 2 * before["se"]:
        text = (
            f"Before the forget, the strongest membership attack ({ATTACKS[strongest]}) told forgotten texts from "
            f"never-trained ones with AUC {_auc(before)}, more than two standard errors above chance (0.5): the model "
            "leaked membership, so the test has power."
        )
    else:
        text = (
            f"Before the forget, no membership attack was more than two standard errors above chance (0.5; "
            f"strongest: {ATTACKS[strongest]}, AUC {_auc(before)}), so this test has little power to show forgetting."
        )
    off_chance = [key for key, a in attacks.items() if abs(a["after"]["auc"] - 0.5) > 2 * a["after"]["se"]]
    listed = ", ".join(f"{ATTACKS[key]} {_auc(a['after'])}" for key, a in attacks.items())
    if off_chance:
        names = ", ".join(ATTACKS[key] for key in off_chance)
        subject = (
            f"the {names} attack's AUC still differs" if len(off_chance) == 1 else f"the {names} AUCs still differ"
        )
        text += f" After it, {subject} from 0.5 by more than two standard errors ({listed})."
    else:
        text += f" After it, every attack's AUC is within two standard errors of 0.5 ({listed})."
    privleak = membership.get("privleak")
    if privleak is None:
        text += (
            " No oracle (a model never trained on the records) was available, so privleak, the leakage relative "
            "to one, is not reported."
        )
    else:
        oracle = membership.get("privleak_oracle") or "model never trained on the records"
        pairs = ", ".join(
            f"{ATTACKS[key]} {_percent_change(v['before'])} → {_percent_change(v['after'])}"
            for key, v in privleak.items()
            if key in ATTACKS
        )
        text += f" privleak is measured against the oracle, the {oracle}; 0% means no more leakage than it: {pairs}."
    return text


def _canary_paragraph(audit: dict) -> str:
    canaries = audit.get("canaries")
    if not canaries:
        return "No canaries were inserted in this run, so there is no exposure or extraction measure."
    before, after = canaries["tests"]["before"], canaries["tests"]["after"]
    if before["p_value"] <= ALPHA:
        direction = "higher" if before["mean_difference_bits"] > 0 else "lower"
        text = (
            f"Before the forget, inserted canaries had {direction} exposure than never-inserted ones (Mann-Whitney "
            f"p = {_p(before)}, mean difference {before['mean_difference_bits']:.1f} bits), so the canary test has "
            "power."
        )
    else:
        text = (
            f"Before the forget, inserted canaries were not distinguishable from never-inserted ones at "
            f"p > {ALPHA} (Mann-Whitney p = {_p(before)}, mean difference {before['mean_difference_bits']:.1f} "
            "bits): the canary test has no power here, so its after result says little."
        )
    if after["p_value"] > ALPHA:
        text += (
            f" After it, exposure of inserted canaries is not distinguishable from never-inserted ones at "
            f"p > {ALPHA} (Mann-Whitney p = {_p(after)}, mean difference {after['mean_difference_bits']:.1f} bits)."
        )
    else:
        text += (
            f" After it, inserted canaries are still distinguishable from never-inserted ones (Mann-Whitney "
            f"p = {_p(after)}, mean difference {after['mean_difference_bits']:.1f} bits)."
        )
    extracted = canaries["extracted"]
    text += (
        f" Greedy extraction recovered {extracted['before']} of {extracted['of']} inserted secrets before the "
        f"forget and {extracted['after']} after."
    )
    return text


def _other_paragraph(audit: dict) -> str:
    parts = []
    bpb = audit["bits_per_byte"]
    moves = [
        f"{name} {_num(bpb[key]['before'])} → {_num(bpb[key]['after'])}" for key, name in SPLITS.items() if key in bpb
    ]
    if moves:
        parts.append(f"Bits per byte, before → after: {'; '.join(moves)}.")
    if router := audit.get("router"):
        parts.append(
            f"The router's top-1 expert was the same before and after on {router['agreement']:.1%} of "
            f"{router['prefixes']} prefixes."
        )
    timings = audit.get("timings") or {}
    forget, full = timings.get("forget_seconds"), timings.get("full_retrain_seconds")
    if forget is not None and full is not None and forget > 0:
        parts.append(
            f"The forget took {_seconds(forget)}; a full retrain takes {_seconds(full)} ({full / forget:.1f}× as long)."
        )
    return " ".join(parts)


def _plot_lines(audit: dict, plots: set[str]) -> list[str]:
    lines = []
    if "losses.png" in plots:
        lines.append("![Membership scores of forgotten and never-trained texts, before and after](losses.png)")
    else:
        lines.append("No per-record membership scores were stored, so there is no score plot (losses.png).")
    if "exposure.png" in plots:
        lines.append("![Canary exposure, inserted before and after, never-inserted after](exposure.png)")
    elif not audit.get("canaries"):
        lines.append("No canaries were inserted, so there is no exposure plot (exposure.png).")
    else:
        lines.append("No canary exposures were stored, so there is no exposure plot (exposure.png).")
    if "timings.png" in plots:
        lines.append("![Time to forget against a full retrain](timings.png)")
    else:
        lines.append("No timings were stored, so there is no timing plot (timings.png).")
    return lines


def _notes(audit: dict) -> list[str]:
    counts = audit.get("counts") or {}
    members, _ = _sides(audit)
    nonmembers = audit["membership"].get("nonmembers") or "held-out records of the same sources"
    notes = [
        f"- Records: {counts.get('forget', 'n/a')} forgotten ({counts.get('forget_trained', 'n/a')} of them trained "
        f"on), {counts.get('heldout', 'n/a')} held-out, {counts.get('retained', 'n/a')} retained (bits per byte).",
        f"- Membership AUC: per-text scores (higher = more member-like) of the forget set's {members} distinct "
        f"texts against {nonmembers} (never trained on, drawn like the forget set); 0.5 is chance; ± is one "
        "standard error (Hanley & McNeil, 1982).",
    ]
    if canaries := audit.get("canaries"):
        inserted, never = len(canaries["inserted"]["before"]), len(canaries["never_inserted"]["before"])
        space, candidates = canaries.get("space_bits"), canaries.get("candidates")
        ceiling = f", so at most {math.log2(candidates + 1):.1f} bits can be measured" if candidates else ""
        notes.append(
            f"- Canaries: {inserted} inserted and {never} never inserted; exposure in bits is "
            f"{canaries.get('estimator', 'a sampled rank')} (secret space {_num(space, 1)} bits){ceiling}. The mean "
            "difference is inserted minus never-inserted exposure; p-values are two-sided Mann-Whitney tests."
        )
    if router := audit.get("router"):
        notes.append(f"- Router agreement: share of {router['prefixes']} prefixes whose top-1 expert is unchanged.")
    timings = audit.get("timings") or {}
    parts = [
        f"{name} {_seconds(timings[key])}"
        for key, name in (
            ("forget_seconds", "forget"),
            ("trained_seconds", "training within the forget"),
            ("full_retrain_seconds", "full retrain"),
            ("oracle_seconds", "oracle retrain"),
        )
        if timings.get(key) is not None
    ]
    if parts:
        notes.append(f"- Timings: {', '.join(parts)}.")
    return notes


# Plots -----------------------------------------------------------------------------------------


def _figure(figsize: tuple[float, float]) -> "Figure":
    from matplotlib.figure import Figure  # ~0.7 s to import: loaded only when a report is written

    return Figure(figsize=figsize, layout="constrained")


def _plot_losses(audit: dict) -> "Figure | None":
    """Two panels (before, after): histograms of the loss attack's score, forgotten vs never-trained texts."""
    panels = {
        when: (_scores(audit, "members", when), _scores(audit, "nonmembers", when)) for when in ("before", "after")
    }
    if not all(forget and heldout for forget, heldout in panels.values()):
        return None
    edges = np.histogram_bin_edges([x for pair in panels.values() for side in pair for x in side], bins=30)
    figure = _figure(figsize=(10, 4))
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    versions = audit["versions"]
    for ax, (when, (forget, heldout)) in zip(axes, panels.items(), strict=True):
        ax.hist(forget, bins=edges, alpha=0.6, label=f"forgotten (n={len(forget)})")
        ax.hist(heldout, bins=edges, alpha=0.6, label=f"never trained on (n={len(heldout)})")
        ax.set_title(f"{when.capitalize()} the forget (version {versions[when]})")
        ax.set_xlabel("loss score = −bits per byte (higher looks more trained-on)")
        ax.legend()
    axes[0].set_ylabel("records")
    figure.suptitle("Can the loss tell forgotten records from never-seen ones? Overlap means no.")
    return figure


def _plot_exposure(audit: dict) -> "Figure | None":
    """Exposure histograms on one axis: inserted canaries before and after, never-inserted after."""
    canaries = audit.get("canaries")
    if not canaries:
        return None
    series = {
        "inserted, before the forget": canaries["inserted"]["before"],
        "inserted, after the forget": canaries["inserted"]["after"],
        "never inserted, after the forget": canaries["never_inserted"]["after"],
    }
    if not any(series.values()):
        return None
    edges = np.histogram_bin_edges([x for values in series.values() for x in values], bins=30)
    figure = _figure(figsize=(8, 4.5))
    ax = figure.subplots()
    for label, values in series.items():
        if values:
            ax.hist(values, bins=edges, histtype="stepfilled", alpha=0.45, label=f"{label} (n={len(values)})")
    if candidates := canaries.get("candidates"):
        ceiling = f"highest measurable with {candidates} candidates"
        ax.axvline(math.log2(candidates + 1), color="grey", linestyle=":", label=ceiling)
    ax.set_title("Canary exposure: how strongly the model prefers a secret it may have seen")
    ax.set_xlabel("exposure (bits; 0 = no preference over random secrets)")
    ax.set_ylabel("canaries")
    ax.legend()
    return figure


def _plot_timings(audit: dict) -> "Figure | None":
    """Horizontal bars: the forget against a full retrain (and the oracle retrain when there was one)."""
    timings = audit.get("timings") or {}
    verify = (audit.get("checks") or {}).get("verify") or {}
    bars = {
        "forget (this request)": timings.get("forget_seconds"),
        "full retrain from scratch": timings.get("full_retrain_seconds"),
        "oracle retrain (verification)": (
            timings["oracle_seconds"] if timings.get("oracle_seconds") is not None else verify.get("oracle_seconds")
        ),
    }
    bars = {label: seconds for label, seconds in bars.items() if seconds is not None}
    if not bars:
        return None
    figure = _figure(figsize=(8, 1.2 + 0.6 * len(bars)))
    ax = figure.subplots()
    labels, seconds = list(bars)[::-1], list(bars.values())[::-1]  # first bar on top
    ax.barh(labels, seconds, color=["C2" if label.startswith("forget") else "C7" for label in labels])
    for y, value in enumerate(seconds):
        ax.annotate(f" {value:.1f} s", (value, y), va="center")
    ax.set_xlim(0, max(seconds) * 1.15)
    ax.set_xlabel("seconds")
    ax.set_title("Time to forget against retraining the model")
    return figure

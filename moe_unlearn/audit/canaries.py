"""What the served model knows of each built-in canary: for seeing forgetting happen by hand
(`moe-unlearn canaries`); `forget --audit` measures it properly (moe_unlearn.audit.collect)."""

from collections.abc import Callable, Sequence

from moe_unlearn.audit.measure import canary_exposure
from moe_unlearn.config import Config
from moe_unlearn.data.corpus import make_canaries
from moe_unlearn.data.splits import is_heldout
from moe_unlearn.errors import UserError
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.storage.registry import Registry


def canary_report(
    load: Callable[[], tuple[MixtureOfExperts, dict]],
    registry: Registry,
    cfg: Config,
    ids: Sequence[str] = (),
    candidates: int = 4096,
) -> dict:
    """One row per canary (all, or those named by `ids`) under the served model (`load()`, called once
    the arguments are checked): copies still trained on, greedy continuation of its prefix, the secret's
    rank among `candidates` random secrets and its exposure in bits."""
    corpus = cfg.data.corpus
    if not cfg.data.builtin or corpus.canaries == 0:
        raise UserError("this run has no canaries: train the built-in corpus with data.corpus.canaries=N")
    every = make_canaries(corpus.canaries, corpus.seed, corpus.domains)
    unknown = sorted(set(ids) - {c.id for c in every})
    if unknown:
        raise UserError(f"unknown canary {unknown[0]!r}: this run has canary-0000 .. {every[-1].id}")
    if candidates < 1:
        raise UserError("candidates must be >= 1")
    model, manifest = load()
    rows = []
    for c in [c for c in every if c.id in ids] if ids else every:
        live = registry.record_rows(c.record_ids(corpus.canary_repeats))
        found = canary_exposure(model, c, candidates)
        greedy, _ = model.generate(c.prefix.encode(), len(c.secret.encode()), temperature=0)
        rows.append(
            {
                "id": c.id,
                "source": c.source,
                "prefix": c.prefix,
                "secret": c.secret,
                "copies_trained_on": sum(not is_heldout(i, cfg.seed, cfg.data.heldout_fraction) for i in live),
                "greedy": greedy.decode("utf-8", errors="replace"),
                "extracted": greedy == c.secret.encode(),
                "rank": found["rank"],
                "exposure": round(found["exposure"], 2),
            }
        )
    return {"version": manifest["version"], "candidates": candidates, "canaries": rows}

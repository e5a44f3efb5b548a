"""The `moe-unlearn` command line (also `python -m moe_unlearn`): a thin layer over `moe_unlearn.Run`.

Every command takes --run-dir; commands that print results take --json. A mistake the user can fix
is one line on stderr and exit code 2, never a traceback. `COMMANDS` maps each subcommand to its
function (in --help order); the function's docstring is its help.
"""

import sys

import typer

from moe_unlearn.cli import data, forgetting, inference, training
from moe_unlearn.serving.command import serve
from moe_unlearn.training.launch import train_or_follow

COMMANDS = {
    "train": training.train,
    "init": training.init,
    "ingest": training.ingest,
    "registry": inference.registry,
    "forget": forgetting.forget,
    "drop": forgetting.drop,
    "add": training.add,
    "update": training.update,
    "verify": forgetting.verify,
    "audit": forgetting.audit,
    "generate": inference.generate,
    "evaluate": inference.evaluate,
    "score": inference.score,
    "canaries": inference.canaries,
    "serve": serve,  # moe_unlearn/serving: handles its own errors (one line, exit 2)
}
GROUPS = {
    "data": (
        "Real corpora: fetch and convert them into JSONL sources for `ingest`.",
        {"prepare": data.prepare},
    ),
    "expert": (
        "Move trained experts between run directories: train experts on separate machines, the router on one.",
        {"export": training.expert_export, "import": training.expert_import},
    ),
}
# their extra arguments (ctx.args) are key=value config overrides
TAKES_OVERRIDES = {training.train, training.init, training.expert_import}
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}

app = typer.Typer(
    help="Language models that can forget: a mixture of per-source experts, exact unlearning by retraining one expert.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks must never print locals (they may hold record text)
)


def _add_commands(group: typer.Typer, commands: dict) -> None:
    for name, command in commands.items():
        group.command(name, context_settings=OVERRIDES if command in TAKES_OVERRIDES else None)(command)


_add_commands(app, COMMANDS)
for group_name, (group_help, group_commands) in GROUPS.items():
    sub_app = typer.Typer(help=group_help, no_args_is_help=True)
    _add_commands(sub_app, group_commands)
    app.add_typer(sub_app, name=group_name)


def main() -> None:
    if sys.argv[1:2] == ["train"]:  # with several processes (DDP) each runs this: rank 0 trains, the others follow
        train_or_follow(app, sys.argv[2:], prog_name="moe-unlearn")
    else:
        app()

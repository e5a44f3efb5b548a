"""`moe-unlearn serve`, as a Typer function: moe_unlearn/cli registers it, and `python -m moe_unlearn.serving`
runs it on its own. The server itself (LitServe, torch) is imported only when the command runs."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from moe_unlearn.errors import UserError
from moe_unlearn.rundir import DEFAULT_RUN_DIR


def serve(
    run_dir: Annotated[
        Path, typer.Option("--run-dir", help="Run directory (registry, versions, current pointer).")
    ] = DEFAULT_RUN_DIR,
    host: Annotated[
        str, typer.Option("--host", help="127.0.0.1: this machine only; 0.0.0.0 (or '::'): every interface.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1024, max=65535)] = 8000,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="/score requests per batch (1: batching off).")
    ] = 8,
    batch_timeout: Annotated[
        float, typer.Option("--batch-timeout", min=0.0, help="Seconds a /score batch waits to fill.")
    ] = 0.005,
    decode_slots: Annotated[
        int,
        typer.Option("--decode-slots", min=1, help="Generation requests decoded together (more wait their turn)."),
    ] = 16,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes per model route.")] = 1,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            min=0,
            help="Torch threads of the engine and each /score worker (0: engine 1, /score the rest)",
        ),
    ] = 0,
    admin_token_file: Annotated[
        Path | None,
        typer.Option("--admin-token-file", help="File holding the admin token (else $MOE_UNLEARN_ADMIN_TOKEN)."),
    ] = None,
    max_prompt_bytes: Annotated[int, typer.Option("--max-prompt-bytes", min=1)] = 4096,
    max_new_bytes: Annotated[
        int, typer.Option("--max-new-bytes", min=1, help="Most bytes one request generates.")
    ] = 1024,
    max_text_bytes: Annotated[int, typer.Option("--max-text-bytes", min=1, help="Longest text /score takes.")] = 16384,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds a request may wait in a queue (then 504).")
    ] = 60.0,
    log_level: Annotated[str, typer.Option("--log-level", help="critical, error, warning, info or debug.")] = "info",
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log each request's line.")] = True,
):
    """Serve the current version over HTTP (LitServe) until interrupted; forgets switch it live.

    Routes: POST /generate, /generate/stream, /score, /v1/completions (OpenAI); GET /health, /experts;
    POST /admin/forget, /admin/drop and GET /admin/requests/ID with 'Authorization: Bearer TOKEN'.
    """
    try:
        from moe_unlearn.serving.admin import load_admin_token
        from moe_unlearn.serving.limits import Limits
        from moe_unlearn.serving.server import ServeSettings, build_server, serve_forever

        settings = ServeSettings(
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            decode_slots=decode_slots,
            workers=workers,
            threads=threads,
            timeout=timeout,
            limits=Limits(
                max_prompt_bytes=max_prompt_bytes, max_new_bytes=max_new_bytes, max_text_bytes=max_text_bytes
            ),
            admin_token=load_admin_token(admin_token_file),
        )
        server = build_server(run_dir, settings)
        serve_forever(server, host=host, port=port, log_level=log_level, access_log=access_log)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None


def app() -> typer.Typer:
    """`serve` as a command of its own (`python -m moe_unlearn.serving`)."""
    alone = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    alone.command()(serve)
    return alone


def main() -> None:
    app()()

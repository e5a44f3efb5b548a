"""The FastAPI routes beside the model routes, on the LitServe app (they run in the HTTP process):

    GET  /experts                 experts, sources, record counts, current version and its manifest
    POST /admin/forget            queue a forget (the CLI's semantics) and start it as a job -> 202 {request_id}
    POST /admin/drop              the same for a drop
    GET  /admin/requests/{id}     status and step of a request; its certificate once done

Admin routes need `Authorization: Bearer <token>`, the token from MOE_UNLEARN_ADMIN_TOKEN or a file
(`--admin-token-file`); with neither they answer 403 and say so. A forget or drop never runs in the server:
`Jobs` starts a `moe_unlearn.serving.request_process` subprocess, returns its first answer (the request id) and leaves
it to train, switch `current` and certify; the model workers see the new version at their next batch.
"""

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse

from moe_unlearn.errors import UserError
from moe_unlearn.rundir import describe, open_registry, read_current, registry_path, version_dir
from moe_unlearn.serving.schemas import DropBody, ForgetBody
from moe_unlearn.storage.registry import Registry

ADMIN_TOKEN_ENV = "MOE_UNLEARN_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16
ANSWER_SECONDS = 300.0  # how long a job may take to queue its request (it waits behind a running job)
REQUEST_FIELDS = ("kind", "status", "step", "created_at", "deadline", "started_at", "finished_at", "error")


def load_admin_token(token_file: Path | None) -> str | None:
    """The admin token: the file's content if a file is given, else the environment variable, else None."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read the admin token file {token_file}: {e}") from None
        source = f"admin token file {token_file}"
    else:
        token = os.environ.get(ADMIN_TOKEN_ENV, "").strip()
        source = ADMIN_TOKEN_ENV
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise UserError(f"{source}: the admin token must be at least {MIN_TOKEN_CHARS} characters with no spaces")
    return token


def bearer(token: str | None):
    """A FastAPI dependency that lets a request through only with `Authorization: Bearer <token>`."""

    def authorize(authorization: str | None = Header(default=None)) -> None:
        if token is None:
            raise HTTPException(
                403,
                f"admin routes are disabled: no admin token is configured (start the server with "
                f"{ADMIN_TOKEN_ENV} set or with --admin-token-file)",
            )
        if not authorization:
            raise HTTPException(
                401, "admin routes need the header 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
            )
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(403, "wrong admin token")

    return authorize


class Jobs:
    """The forget and drop jobs this HTTP process started, by request id (to report their exit code)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._reapers: set[asyncio.Task] = set()

    async def start(self, kind: str, args: dict) -> JSONResponse:
        env = {k: v for k, v in os.environ.items() if k != ADMIN_TOKEN_ENV}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "moe_unlearn.serving.request_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C to the server does not interrupt a forget half-way
        )
        proc.stdin.write(json.dumps({"kind": kind, "run_dir": str(self.run_dir), "args": args}).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), ANSWER_SECONDS)
        except asyncio.TimeoutError:
            self._reap(proc)
            return _error(
                504, f"the {kind} job did not queue its request within {ANSWER_SECONDS:.0f} s (still running)"
            )
        self._reap(proc)
        if not line:
            code = await asyncio.wait_for(proc.wait(), 10)
            return _error(
                500, f"the {kind} job exited with code {code} before queuing the request (see the server log)"
            )
        try:
            answer = json.loads(line)
        except ValueError:
            return _error(500, f"the {kind} job gave an answer that is not JSON (see the server log)")
        if "error" in answer:
            return _error(answer["status"], answer["error"])
        if answer.get("dry_run"):
            return JSONResponse(answer)
        self.processes[answer["request_id"]] = proc
        queued = answer.get("status") in ("pending", "running")
        return JSONResponse(
            {**answer, "poll": f"/admin/requests/{answer['request_id']}"}, status_code=202 if queued else 200
        )

    def _reap(self, proc: asyncio.subprocess.Process) -> None:
        """Drain the job's stdout and collect its exit code when it ends (no zombie, no blocked pipe)."""

        async def reap():
            await proc.stdout.read()
            await proc.wait()

        task = asyncio.create_task(reap())
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    def exit_code(self, request_id: str) -> dict | None:
        proc = self.processes.get(request_id)
        return None if proc is None else {"pid": proc.pid, "exit_code": proc.returncode}


def add_routes(app: FastAPI, run_dir: Path, token: str | None) -> None:
    """GET /experts and the /admin routes, on the server's FastAPI app."""
    jobs = Jobs(run_dir)

    @app.get("/experts")
    def experts() -> dict:
        try:
            registry = open_registry(run_dir, None)
        except UserError as e:
            raise HTTPException(503, str(e)) from None
        try:
            info = describe(run_dir, registry)
        except UserError as e:
            raise HTTPException(503, str(e)) from None
        finally:
            registry.close()
        return {k: v for k, v in info.items() if k != "run_dir"}

    @app.get("/v1/models")
    def models() -> dict:
        """OpenAI's model list (`client.models.list()`): the served version, by the id the answers carry in
        `system_fingerprint`; any `model` name is accepted by the OpenAI routes."""
        current = read_current(run_dir)
        if current is None:
            raise HTTPException(503, "no trained model to serve")
        created = int(version_dir(run_dir, current).stat().st_mtime)
        return {
            "object": "list",
            "data": [
                {"id": f"moe-unlearn-v{current}", "object": "model", "created": created, "owned_by": "moe-unlearn"}
            ],
        }

    admin = APIRouter(prefix="/admin", dependencies=[Depends(bearer(token))])

    @admin.post("/forget", status_code=202)
    async def forget(body: ForgetBody) -> JSONResponse:
        if bool(body.records) == (body.match is not None):  # checked here: a job process takes seconds to start
            return _error(400, "name the records to forget with exactly one of records or match")
        return await jobs.start("forget", body.model_dump())

    @admin.post("/drop", status_code=202)
    async def drop(body: DropBody) -> JSONResponse:
        if (body.source is None) == (body.expert is None):
            return _error(400, "name exactly one of source or expert to drop")
        return await jobs.start("drop", body.model_dump())

    @admin.get("/requests/{request_id}")
    def request_status(request_id: str) -> dict:
        registry = Registry(registry_path(run_dir))
        try:
            request = registry.request(request_id)
            found = registry.certificate(request_id)
        finally:
            registry.close()
        if request is None:
            raise HTTPException(404, f"unknown request {request_id!r}")
        out = {"request_id": request_id, **{k: request[k] for k in REQUEST_FIELDS}}
        if request["status"] == "done":
            out["certificate"] = found
        job = jobs.exit_code(request_id)
        if job is not None:
            out["job"] = job
        return out

    app.include_router(admin)


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)

"""Continuous batching: one engine process decodes every generation request of the server together.

The generation routes (/generate, /generate/stream, /v1/completions, /v1/chat/completions and their
streaming twins) are LitServe workers that hold no model: each request opens a connection to the engine
(a Unix socket in a private directory), sends its sampling settings as one JSON line and reads back the
bytes as they are drawn. The engine keeps `slots` sequences in one `Decoder` per served version and
advances them all by one byte per step; a request joins between two steps (its prompt prefilled on its
own) and leaves when it has its bytes or when its connection closes (a stop string reached, a client
gone): its slot is free for the next step.

Batching never changes a request's text: each request draws from its own generator seeded by its
`seed`, and the decoder is batch-invariant (`Decoder(invariant=True)`: every step has one shape, so a
row's numbers do not depend on the other rows). Alone or among 15 others, a request gets the same bytes.

Hot swap: the engine reads the `current` pointer whenever it admits requests; a request admitted after
a switch decodes on the new version, one already decoding finishes on the version it started on (the
old version's decoder is dropped when its last request ends). A version that does not load answers the
waiting requests 503 and is tried again for the next ones.

Protocol (JSON lines): the request {"prompt": base64, "max_new_bytes", "temperature", "top_k", "seed"};
the answer {"version", "names", "mixing"} (or {"error", "status"}), then one line per step, the list
[new byte, *candidate weights that produced it], then {"done": true}.
"""

import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import selectors
import socket
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import torch

from moe_unlearn.errors import UserError
from moe_unlearn.models.decoding import Decoder, draw, draw_rows
from moe_unlearn.models.loading import CurrentModel
from moe_unlearn.models.moe import MixtureOfExperts

SOCKET_NAME = "engine.sock"


@dataclass
class Sequence:
    """One request being decoded: its connection, sampler and what it has drawn so far."""

    conn: socket.socket
    generator: torch.Generator
    temperature: float
    top_k: int
    remaining: int
    last: int = 0


class VersionSlots:
    """A served version's decoder and the request in each of its slots."""

    def __init__(self, model: MixtureOfExperts, version: int, slots: int):
        self.model, self.version = model, version
        self.decoder = Decoder(model, slots, invariant=slots > 1)
        self.rows: list[Sequence | None] = [None] * slots
        self.header = json.dumps({"version": version, "names": model.names, "mixing": model.settings})

    def free(self) -> int | None:
        return next((i for i, r in enumerate(self.rows) if r is None), None)

    def active(self) -> int:
        return sum(r is not None for r in self.rows)


class Engine:
    """The decoding loop over a listening socket: admit, step, answer; see the module's docstring."""

    def __init__(self, run_dir: Path, slots: int = 16):
        self.current, self.slots = CurrentModel(run_dir), slots
        self.versions: dict[int, VersionSlots] = {}
        self.served: int | None = None  # the version new requests decode on
        self.pending: deque[tuple[socket.socket, dict]] = deque()
        self.selector = selectors.DefaultSelector()

    def load(self) -> None:
        """Load the served version now (a UserError if it does not load)."""
        self._current_slots()

    def serve(self, listener: socket.socket, stop=lambda: False) -> None:
        """Run until `stop()` is true (checked at least every half second)."""
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, None)
        try:
            while not stop():
                busy = any(v.active() for v in self.versions.values())
                for key, _ in self.selector.select(timeout=0 if busy else 0.5):
                    if key.fileobj is listener:
                        conn, _ = listener.accept()
                        conn.setblocking(False)
                        self.selector.register(conn, selectors.EVENT_READ, bytearray())
                    else:
                        self._read(key.fileobj, key.data)
                self._admit()
                self._step()
        finally:
            for key in list(self.selector.get_map().values()):
                key.fileobj.close()
            self.selector.close()

    def _read(self, conn: socket.socket, buffer: bytearray) -> None:
        """A request line, or the end of a connection (its request cancelled)."""
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if buffer is None:
            return  # a request is under way: anything more from the client is ignored
        buffer += data
        if b"\n" in buffer:
            self.selector.modify(conn, selectors.EVENT_READ, None)
            try:
                self.pending.append((conn, json.loads(buffer[: buffer.index(b"\n")])))
            except ValueError:
                self._answer(conn, {"error": "not a JSON request line", "status": 400}, close=True)

    def _admit(self) -> None:
        """Give waiting requests the free slots of the served version (read from the pointer now)."""
        while self.pending:
            try:
                slots = self._current_slots()
            except UserError as e:
                while self.pending:
                    self._answer(self.pending.popleft()[0], {"error": f"no model to serve: {e}", "status": 503}, True)
                return
            slot = slots.free()
            if slot is None:
                return
            conn, request = self.pending.popleft()
            try:
                self._start(slots, slot, conn, request)
            except (KeyError, TypeError, ValueError) as e:
                slots.rows[slot] = None
                self._answer(conn, {"error": f"bad engine request: {e}", "status": 400}, close=True)

    def _current_slots(self) -> VersionSlots:
        model, manifest = self.current.get()
        self.served = manifest["version"]
        if self.served not in self.versions:
            self.versions[self.served] = VersionSlots(model, self.served, self.slots)
        return self.versions[self.served]

    def _start(self, slots: VersionSlots, slot: int, conn: socket.socket, request: dict) -> None:
        prompt = base64.b64decode(request["prompt"], validate=True)
        seq = Sequence(
            conn,
            torch.Generator().manual_seed(int(request["seed"])),
            float(request["temperature"]),
            int(request["top_k"]),
            int(request["max_new_bytes"]),
        )
        if not self._send(conn, slots.header.encode() + b"\n"):
            return
        if seq.remaining <= 0:
            self._finish(seq)
            return
        slots.rows[slot] = seq
        log_p, weights = slots.decoder.start(slot, prompt)
        self._emit(slots, slot, log_p, weights)

    def _step(self) -> None:
        """One byte for every active request of every version; versions no longer served and idle go."""
        for version, slots in list(self.versions.items()):
            if not slots.active():
                continue
            rows = list(range(self.slots)) if slots.decoder.invariant else [0]
            try:
                log_p, weights = slots.decoder.advance(
                    rows, [r.last if r else 0 for r in map(slots.rows.__getitem__, rows)]
                )
            except Exception as e:  # noqa: BLE001 -- a failed step answers its requests rather than the server dying
                for seq in filter(None, slots.rows):
                    self._answer(seq.conn, {"error": f"decoding failed: {e}", "status": 500}, close=True)
                del self.versions[version]
                continue
            drawn = self._draw_every_slot(slots, log_p) if slots.decoder.invariant else [None]
            for i, row in enumerate(rows):
                if slots.rows[row] is not None:
                    self._emit(slots, row, log_p[i], weights[i], drawn[i])
        for version in [v for v, slots in self.versions.items() if v != self.served and not slots.active()]:
            del self.versions[version]

    @staticmethod
    def _draw_every_slot(slots: VersionSlots, log_p: torch.Tensor) -> list[int]:
        """Every slot's next byte in one batched draw (idle slots draw too: one shape, whatever is under
        way), each active one with its own temperature, top-k and seeded generator."""
        idle = Sequence(None, None, 0.0, 0, 0)  # greedy: draws no uniform
        rows = [r or idle for r in slots.rows]
        draws = [torch.rand(1, generator=r.generator) if r.temperature > 0 else torch.zeros(1) for r in rows]
        uniform = torch.cat(draws)
        temperature = torch.tensor([r.temperature for r in rows])
        top_k = torch.tensor([r.top_k for r in rows])
        return draw_rows(log_p, temperature, top_k, uniform).tolist()

    def _emit(
        self, slots: VersionSlots, slot: int, log_p: torch.Tensor, weights: torch.Tensor, byte: int | None = None
    ) -> None:
        """Send slot's next byte (drawn now unless given); finish the request when it has all its bytes."""
        seq = slots.rows[slot]
        seq.last = draw(log_p, seq.temperature, seq.top_k, seq.generator) if byte is None else byte
        seq.remaining -= 1
        if not self._send(seq.conn, json.dumps([seq.last, *weights.tolist()]).encode() + b"\n"):
            return
        if seq.remaining == 0:
            slots.rows[slot] = None
            self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        self._answer(seq.conn, {"done": True}, close=True)

    def _answer(self, conn: socket.socket, message: dict, close: bool = False) -> None:
        if self._send(conn, json.dumps(message).encode() + b"\n") and close:
            self._close(conn)

    def _send(self, conn: socket.socket, data: bytes) -> bool:
        """False (and the request cancelled) when the client is gone or reads too slowly to keep up."""
        try:
            conn.sendall(data)
            return True
        except OSError:  # BlockingIOError included: a full socket buffer
            self._close(conn)
            return False

    def _close(self, conn: socket.socket) -> None:
        """Forget conn's request wherever it is (waiting or decoding) and close the connection."""
        for slots in self.versions.values():
            slots.rows = [None if r is not None and r.conn is conn else r for r in slots.rows]
        self.pending = deque(p for p in self.pending if p[0] is not conn)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn)
        conn.close()


def listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(256)
    return listener


def _engine_process(run_dir: str, path: str, slots: int, threads: int, ready) -> None:
    torch.set_num_threads(threads)
    engine = Engine(Path(run_dir), slots)
    try:
        engine.load()
        listener = listen(Path(path))
    except (UserError, OSError) as e:
        ready.send(str(e))
        return
    ready.send("")
    engine.serve(listener)


class EngineProcess:
    """The engine in a process of its own, listening in a private temporary directory: `start` returns
    once the served version has loaded (a UserError if it does not), `stop` ends it."""

    def __init__(self, run_dir: Path, slots: int = 16, threads: int = 1):
        self.run_dir, self.slots, self.threads = Path(run_dir), slots, threads
        self._dir = Path(tempfile.mkdtemp(prefix="moe-unlearn-engine-"))  # 0700: only this user connects
        self.address = str(self._dir / SOCKET_NAME)
        self._process = None

    def start(self) -> None:
        context = mp.get_context("spawn")
        ours, theirs = context.Pipe(duplex=False)
        args = (str(self.run_dir), self.address, self.slots, self.threads, theirs)
        self._process = context.Process(target=_engine_process, args=args, daemon=True, name="moe-unlearn-engine")
        self._process.start()
        if not ours.poll(300):
            self.stop()
            raise UserError("the decoding engine did not start within 5 minutes")
        problem = ours.recv()
        if problem:
            self.stop()
            raise UserError(f"the decoding engine cannot start: {problem}")

    def stop(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(10)
        Path(self.address).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._dir.rmdir()


async def decode(address: str, prompt: bytes, max_new_bytes: int, temperature: float, top_k: int, seed: int):
    """A request's answer from the engine at `address`: the header dict, then the drawn bytes in pieces
    (as many as have arrived), each a list of rows [byte, *candidate weights]. Closing the iterator early
    cancels the request (its slot is free at the engine's next step). Raises EngineError."""
    try:
        reader, writer = await asyncio.open_unix_connection(address, limit=2**20)
    except OSError as e:
        raise EngineError(503, f"the decoding engine is not running ({e.strerror})") from None
    try:
        request = {
            "prompt": base64.b64encode(prompt).decode(),
            "max_new_bytes": max_new_bytes,
            "temperature": temperature,
            "top_k": top_k,
            "seed": seed,
        }
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        buffer = b""
        while True:
            data = await reader.read(65536)
            if not data:
                raise EngineError(503, "the decoding engine stopped")
            lines, newline, buffer = (buffer + data).rpartition(b"\n")
            if not newline:
                buffer = lines + buffer
                continue
            rows = []
            for message in map(json.loads, lines.split(b"\n")):
                if isinstance(message, list):
                    rows.append(message)
                    continue
                if rows:
                    yield rows
                    rows = []
                if "error" in message:
                    raise EngineError(message["status"], message["error"])
                if message.get("done"):
                    return
                yield message  # the header
            if rows:
                yield rows
    finally:
        writer.close()


def engine_alive(address: str) -> bool:
    """Whether an engine listens at `address` (a connection opened and closed: no request)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


class EngineError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Drawn:
    """The bytes a request has taken from the engine and the sum of their candidate weights, summed as
    `MixtureOfExperts.generate` sums them (float32, in order), so means agree to the last digit."""

    def __init__(self, names: list[str]):
        self.names, self.data, self.weight_sum = names, bytearray(), torch.zeros(len(names))

    def add(self, row: list) -> int:
        self.data.append(row[0])
        self.weight_sum += torch.tensor(row[1:])
        return row[0]

    def weights(self) -> dict[str, float]:
        """Mean weight per candidate over the bytes taken (zeros when none)."""
        means = (self.weight_sum / max(1, len(self.data))).tolist()
        return dict(zip(self.names, means, strict=True))


async def collect(stream: AsyncIterator) -> tuple[dict, Drawn]:
    """(header, every byte drawn) of a `decode` stream."""
    header, drawn = None, None
    async for item in stream:
        if isinstance(item, dict):
            header, drawn = item, Drawn(item["names"])
        else:
            for row in item:
                drawn.add(row)
    return header, drawn

"""A decoding engine (moe_unlearn.serving.engine) in a thread of the test process, for the generation
routes' LitAPIs and the engine's own tests."""

import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from moe_unlearn.serving.engine import SOCKET_NAME, Engine, listen


@contextmanager
def engine_thread(run_dir: Path, slots: int = 16):
    """(engine, address) of an engine serving `run_dir` in a thread, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-test-engine-") as tmp:
        address = Path(tmp) / SOCKET_NAME
        engine = Engine(run_dir, slots)
        engine.load()
        stop = threading.Event()
        thread = threading.Thread(target=engine.serve, args=(listen(address), stop.is_set), daemon=True)
        thread.start()
        try:
            yield engine, str(address)
        finally:
            stop.set()
            thread.join(10)


@pytest.fixture(scope="module")
def engine_address(tiny_run_dir):
    """The address of an engine (16 slots) serving the tiny run directory."""
    with engine_thread(tiny_run_dir) as (_, address):
        yield address

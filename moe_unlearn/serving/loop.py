"""LitServe's batched worker loop, waiting instead of polling.

LitServe's `BatchedLoop` gathers a batch by polling the request queue (a multiprocessing manager queue)
every millisecond, busy or idle: on this 2-core machine its idle workers and the queue's manager used
~30% of a core between them. `WaitingBatchedLoop` blocks for a batch's first request (checking every
second for shutdown), then gathers more for up to `batch_timeout` seconds or `max_batch_size` requests,
whichever comes first: the same batches, no cost while idle. Written against litserve 0.2.x internals
(the queue item layout and the sentinel), which pyproject pins.
"""

import time
from queue import Empty

from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop


class WaitingBatchedLoop(BatchedLoop):
    def get_batch_requests(self, lit_api, request_queue, transport) -> tuple[list, list]:
        """(payloads [(response_queue_id, uid, request)], timed out [(response_queue_id, uid)])."""
        try:
            items = [request_queue.get(timeout=1.0)]
        except Empty:
            return [], []
        deadline = time.monotonic() + lit_api.batch_timeout
        while items[-1] != _SENTINEL_VALUE and len(items) < lit_api.max_batch_size:
            try:
                remaining = deadline - time.monotonic()
                items.append(request_queue.get(timeout=remaining) if remaining > 0 else request_queue.get_nowait())
            except Empty:
                break
        if items[-1] == _SENTINEL_VALUE:
            raise _StopLoopError()
        payloads, timed_out, now = [], [], time.monotonic()
        limit = lit_api.request_timeout
        for response_queue_id, uid, timestamp, request in items:
            if limit not in (None, False, -1) and now - timestamp > limit:
                timed_out.append((response_queue_id, uid))
            else:
                payloads.append((response_queue_id, uid, request))
        return payloads, timed_out

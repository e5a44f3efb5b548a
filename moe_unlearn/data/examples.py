"""Records as language-model examples: byte chunks, (inputs, targets) pairs and padded batches.

Plain torch (no Lightning), so that scoring, generation and the audit start without the training stack.
"""

import torch

VOCAB = 256  # bytes
BOS = 256  # input-only token that starts every chunk (models see VOCAB + 1 input symbols)
IGNORE = -100  # target value of padding positions


def chunks(data: bytes, block_size: int) -> list[bytes]:
    """Non-overlapping chunks of at most block_size bytes (an empty input gives no chunk)."""
    return [data[i : i + block_size] for i in range(0, len(data), block_size)]


def lm_example(chunk: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): inputs are BOS + chunk[:-1], targets the chunk's bytes."""
    targets = torch.frombuffer(bytearray(chunk), dtype=torch.uint8).long()
    inputs = torch.cat([torch.tensor([BOS]), targets[:-1]])
    return inputs, targets


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a batch: inputs with 0, targets with IGNORE (padding is never predicted)."""
    width = max(len(x) for x, _ in batch)
    inputs = torch.zeros(len(batch), width, dtype=torch.long)
    targets = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        inputs[i, : len(x)] = x
        targets[i, : len(y)] = y
    return inputs, targets

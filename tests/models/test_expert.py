"""Tests of moe_unlearn.models.expert: shapes, strict causality, the block-size limit, seeded init."""

import pytest
import torch

from moe_unlearn.config import ExpertModelConfig
from moe_unlearn.data.examples import BOS, VOCAB
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.router import byte_ngrams, feature_size

CFG = ExpertModelConfig(n_layer=1, n_head=2, d_model=16, block_size=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # module-scoped, tests/conftest.py


def make_expert(seed: int = 0, cfg: ExpertModelConfig = CFG) -> ByteTransformer:
    torch.manual_seed(seed)
    return ByteTransformer(cfg).eval()


def random_inputs(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    """BOS-first inputs: column 0 is BOS, the rest random bytes."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, VOCAB, (batch, length - 1), generator=g)
    return torch.cat([torch.full((batch, 1), BOS), data], dim=1)


def test_constants() -> None:
    assert VOCAB == 256
    assert BOS == 256


@pytest.mark.parametrize("batch,length", [(1, 1), (2, 5), (3, CFG.block_size)])
def test_output_shape_and_dtype(batch: int, length: int) -> None:
    logits = make_expert()(random_inputs(batch, length))
    assert logits.shape == (batch, length, 256)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_bos_is_accepted_anywhere_and_byte_255_too() -> None:
    inputs = torch.tensor([[BOS, 255, 0, BOS, 255]])
    assert make_expert()(inputs).shape == (1, 5, 256)


def test_batch_rows_are_independent() -> None:
    model = make_expert()
    inputs = random_inputs(3, 20)
    batched = model(inputs)
    for i in range(3):
        torch.testing.assert_close(batched[i], model(inputs[i : i + 1])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [1, 7, 19, CFG.block_size - 1])
def test_causal_changing_byte_t_leaves_earlier_positions_bit_identical(t: int) -> None:
    model = make_expert()
    inputs = random_inputs(2, CFG.block_size)
    changed = inputs.clone()
    changed[:, t] = (changed[:, t] + 97) % VOCAB
    with torch.no_grad():
        before, after = model(inputs), model(changed)
    assert torch.equal(before[:, :t], after[:, :t])
    for b in range(2):
        assert not torch.equal(before[b, t], after[b, t])
    # and the change propagates forwards (attention): some later position moves too
    if t + 1 < CFG.block_size:
        assert not torch.equal(before[:, t + 1 :], after[:, t + 1 :])


def test_causal_prefix_forward_matches_full_forward() -> None:
    """Logits on a prefix equal the full sequence's first positions: no peeking at the future."""
    model = make_expert()
    inputs = random_inputs(1, CFG.block_size)
    with torch.no_grad():
        full = model(inputs)
        for length in (1, 5, 17):
            torch.testing.assert_close(model(inputs[:, :length]), full[:, :length], rtol=1e-5, atol=1e-6)


def test_block_size_is_accepted_and_one_more_raises() -> None:
    model = make_expert()
    assert model(random_inputs(1, CFG.block_size)).shape == (1, CFG.block_size, 256)
    with pytest.raises(ValueError, match="block_size"):
        model(random_inputs(1, CFG.block_size + 1))
    with pytest.raises(ValueError, match=str(CFG.block_size + 5)):
        model(random_inputs(2, CFG.block_size + 5))


def test_same_seed_gives_identical_initial_weights() -> None:
    a, b = make_expert(seed=123), make_expert(seed=123)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    inputs = random_inputs(2, 16)
    with torch.no_grad():
        assert torch.equal(a(inputs), b(inputs))


def test_different_seed_gives_different_weights() -> None:
    a, b = make_expert(seed=1).state_dict(), make_expert(seed=2).state_dict()
    differing = {name for name in a if not torch.equal(a[name], b[name])}
    assert {"tok.weight", "pos.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.0.weight"} <= differing


def test_init_statistics() -> None:
    """GPT-2 style init: N(0, 0.02) matrices and embeddings, zero biases, scaled residual projections."""
    cfg = ExpertModelConfig(n_layer=2, n_head=2, d_model=64, block_size=32)
    model = make_expert(seed=0, cfg=cfg)
    params = dict(model.named_parameters())
    assert params["tok.weight"].shape == (VOCAB + 1, 64)
    assert params["pos.weight"].shape == (32, 64)
    assert abs(params["tok.weight"].std().item() - 0.02) < 0.002
    assert abs(params["blocks.0.mlp.0.weight"].std().item() - 0.02) < 0.002
    scaled = 0.02 / (2 * cfg.n_layer) ** 0.5
    for name in ("blocks.0.attn.proj.weight", "blocks.1.mlp.2.weight"):
        assert abs(params[name].std().item() - scaled) < 0.2 * scaled, name
    for name, p in params.items():
        if name.endswith(".bias") and not name.startswith(("blocks.0.ln", "blocks.1.ln", "ln_f")):
            assert torch.equal(p, torch.zeros_like(p)), name


def test_output_embedding_is_tied_to_byte_embeddings() -> None:
    """Logits are the final hidden state times the byte rows of the input embedding."""
    model = make_expert()
    inputs = random_inputs(1, 8)
    hidden = {}
    model.ln_f.register_forward_hook(lambda m, i, o: hidden.__setitem__("h", o))
    with torch.no_grad():
        logits = model(inputs)
    torch.testing.assert_close(logits, hidden["h"] @ model.tok.weight[:VOCAB].T)
    assert not any(n.startswith("head") or n.startswith("lm_head") for n, _ in model.named_parameters())


def test_router_features_are_the_input_embeddings_the_hidden_states_and_the_byte_ngrams() -> None:
    model, inputs = make_expert(), random_inputs(2, 9)
    with torch.no_grad():
        features = model.router_features(inputs)
        assert features.shape == (2, 9, feature_size(CFG.d_model))
        assert torch.equal(features[..., : CFG.d_model], model.tok(inputs))
        assert torch.equal(features[..., CFG.d_model : 2 * CFG.d_model], model.hidden(inputs))
        assert torch.equal(features[..., 2 * CFG.d_model :], byte_ngrams(inputs))
        assert torch.equal(model.router_features(inputs, model.hidden(inputs)), features)

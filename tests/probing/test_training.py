"""The probe bank's hand-written training step: closed-form gradients and chunked mini-batches."""
import numpy as np
import pytest
import torch

from speechprobe.probing import training
from speechprobe.probing.options import TrainingOptions
from speechprobe.probing.training import ProbeBank, train_probe_bank


def _bank(neurox_loss: bool, masked: bool, input_index) -> ProbeBank:
    rng = np.random.default_rng(0)
    P, D, C = len(input_index), 7, 3
    mask = (rng.random((P, D)) < 0.6).astype(np.float32) if masked else None
    if mask is not None:
        mask[:, 0] = 1
    bank = ProbeBank(D, C, rng.uniform(0, 0.1, P), rng.uniform(0, 0.1, P), feature_mask=mask,
                     input_index=input_index, neurox_loss=neurox_loss)
    with torch.no_grad():  # a non-zero point, masked weights at 0 as training keeps them
        bank.weight.copy_(torch.randn(bank.weight.shape, generator=torch.Generator().manual_seed(1)))
        if masked:
            bank.weight.mul_(bank.mask)
        bank.weight[0, 1, 0, :] = 0.0  # a weight exactly at 0: the subgradient 0 of |w| there
        bank.bias.copy_(torch.randn(bank.bias.shape, generator=torch.Generator().manual_seed(2)))
    return bank


def _closed_form_matches_autograd(bank, X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bank's closed-form gradients, checked against autograd on its training loss; returned for more checks."""
    grad_weight, grad_bias = bank.gradients(X, y)
    bank.zero_grad()
    bank.training_loss(X, y).sum().backward()
    torch.testing.assert_close(grad_weight, bank.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_bias, bank.bias.grad, rtol=1e-5, atol=1e-6)
    return grad_weight, grad_bias


@pytest.mark.parametrize("neurox_loss", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("input_index", [[0, 0, 1, 1, 2, 2], [2, 0, 1, 0, 2, 1], [1, 1, 1]])
def test_closed_form_gradients_equal_autograd(neurox_loss, masked, input_index):
    bank = _bank(neurox_loss, masked, input_index)
    X = torch.randn(3, 11, 7, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 0])
    grad_weight, grad_bias = _closed_form_matches_autograd(bank, X, y)
    if masked:
        assert torch.all(grad_weight[bank.mask.expand_as(grad_weight) == 0] == 0)


def test_adam_step_equals_torch_adam():
    bank = _bank(False, False, [0, 0, 1, 1])
    reference = [p.detach().clone().requires_grad_(True) for p in (bank.weight, bank.bias)]
    optimiser = torch.optim.Adam(reference, lr=bank.hparams.lr)
    X = torch.randn(2, 16, 7, generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(5))
    for _ in range(3):
        grads = bank.gradients(X, y)
        for p, g in zip(reference, grads):
            p.grad = g.clone()
        optimiser.step()
        bank._adam_step(*grads)
    torch.testing.assert_close(bank.weight.detach(), reference[0].detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(bank.bias.detach(), reference[1].detach(), rtol=1e-5, atol=1e-7)


def test_chunk_size_does_not_change_training(monkeypatch):
    """Chunks of 1 mini-batch or of the whole epoch: the same batches in the same order, the same probes."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(2, 300, 20)).astype(np.float32)
    y = (X[0, :, 0] + X[1, :, 1] > 0).astype(np.int64)
    args = (X[:, :250], y[:250], X[:, 250:], y[250:], 2, [1e-3, 0.0], [0.0, 1e-3])
    kwargs = dict(input_index=[0, 1], options=TrainingOptions(max_epochs=4, batch_size=16, patience=None))
    whole = train_probe_bank(*args, **kwargs)
    monkeypatch.setattr(training, "CHUNK_BYTES", 1)  # one mini-batch per Lightning step
    single = train_probe_bank(*args, **kwargs)
    torch.testing.assert_close(whole.best_weight, single.best_weight, rtol=0, atol=0)
    assert whole.adam_steps == single.adam_steps == 4 * 16  # ceil(250 / 16) steps per epoch


# --------------------------------------------------------------------------------------------------
# ragged banks: nested masks (top-k of one ranking), each probe computed on its own k features


def _nested_masks(ranking: np.ndarray, ks) -> np.ndarray:
    masks = np.zeros((len(ks), len(ranking)), np.float32)
    for row, k in enumerate(ks):
        masks[row, ranking[:k]] = 1
    return masks


def test_nested_feature_order():
    ranking = np.random.default_rng(7).permutation(12)
    masks = _nested_masks(ranking, [5, 1, 12, 3, 3])
    order = training.nested_feature_order(masks)
    k = masks.sum(axis=1).astype(int)
    for row in range(len(masks)):  # every mask is a prefix of the order
        assert set(order[:k[row]].tolist()) == set(np.flatnonzero(masks[row]).tolist())
    masks[0, ranking[0]] = 0  # mask 0 no longer holds mask 1's feature: not nested
    assert training.nested_feature_order(masks) is None


def test_tiers_cover_every_probe_once_and_trade_padding_against_tier_count():
    widths = np.array([384, 1, 2, 3, 200, 220, 4, 384])
    for cost, expected in ((0, None), (256, None), (1e9, 1)):
        tiers = training._tiers(widths, cost)
        assert sorted(np.concatenate(tiers).tolist()) == list(range(len(widths)))
        spans = [(widths[t].min(), widths[t].max()) for t in tiers]
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # tiers of consecutive widths
        if expected is not None:
            assert len(tiers) == expected
        else:  # the small widths are not padded to 384
            assert max(widths[t].max() for t in tiers if 1 in widths[t]) <= 4
    assert len(training._tiers(widths, 256)) == 3  # {1..4}, {200, 220}, {384, 384}


def _ragged_bank(neurox_loss: bool, drop=()) -> training.RaggedProbeBank:
    """7 probes of 30 features in 3 tiers (a tier costs as much as 4 features here, not 256)."""
    rng = np.random.default_rng(8)
    D, C, ks = 30, 3, [1, 2, 3, 12, 14, 30, 29]
    ranking = rng.permutation(D)
    masks = _nested_masks(ranking, ks)
    bank = training.RaggedProbeBank(D, C, rng.uniform(0, 0.1, len(ks)), rng.uniform(0, 0.1, len(ks)),
                                    feature_mask=masks, feature_order=training.nested_feature_order(masks),
                                    neurox_loss=neurox_loss)
    assert len(bank._tiers) == 3
    with torch.no_grad():  # a non-zero point, masked weights at 0 as training keeps them
        bank.weight.copy_(torch.randn(bank.weight.shape, generator=torch.Generator().manual_seed(1)))
        bank.weight.mul_(bank._mask_full)
        bank.bias.copy_(torch.randn(bank.bias.shape, generator=torch.Generator().manual_seed(2)))
    if drop:
        bank.active[list(drop)] = False
        bank._frozen_some()
    return bank, masks


@pytest.mark.parametrize("neurox_loss", [False, True])
@pytest.mark.parametrize("drop", [(), (0, 5)])
def test_ragged_closed_form_gradients_equal_autograd(monkeypatch, neurox_loss, drop):
    monkeypatch.setattr(training, "TIER_COST", 4)
    bank, masks = _ragged_bank(neurox_loss, drop)
    X = torch.randn(1, 11, 30, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 0])
    grad_weight, grad_bias = _closed_form_matches_autograd(bank, X, y)
    assert torch.all(grad_weight[bank._mask_full == 0] == 0)
    # the probes in training, and their logits, are those of a masked ProbeBank with the same weights
    kept = bank._packed.numpy()
    assert sorted(kept.tolist()) == sorted(set(range(7)) - set(drop))
    reference = ProbeBank(30, 3, bank.l1.numpy(), bank.l2.numpy(), feature_mask=masks, neurox_loss=neurox_loss)
    with torch.no_grad():
        reference.weight.copy_(bank.effective_weight().transpose(0, 1)[None])
        reference.bias.copy_(bank.effective_bias())
    torch.testing.assert_close(bank(X)[0], reference(X)[0][:, kept], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bank.penalty(), reference.penalty()[kept], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neurox_loss", [False, True])
def test_ragged_training_equals_masked_bank(monkeypatch, neurox_loss):
    """Nested masks: the ragged bank (tiers, frozen probes dropped) trains every probe as the masked bank."""
    monkeypatch.setattr(training, "TIER_COST", 4)  # several tiers at these small widths
    rng = np.random.default_rng(9)
    D, C = 40, 3
    X = rng.normal(size=(1, 500, D)).astype(np.float32)
    y = (X[0, :, :3] @ np.array([1.5, -1.0, 0.5]) + 0.5 * rng.normal(size=500) > 0).astype(np.int64)
    y[X[0, :, 5] > 1.2] = 2
    ks = [1, 2, 3, 5, 8, 13, 21, 34, 40]
    masks = _nested_masks(np.concatenate([[0, 1, 2, 5], rng.permutation(np.setdiff1d(np.arange(D), [0, 1, 2, 5]))]), ks)
    args = (X[:, :400], y[:400], X[:, 400:], y[400:], C, [1e-3] * len(ks), [1e-3] * len(ks))
    kwargs = dict(feature_mask=masks,
                  options=TrainingOptions(max_epochs=25, batch_size=32, lr=1e-2, patience=2, neurox_loss=neurox_loss))
    ragged = train_probe_bank(*args, **kwargs)
    monkeypatch.setattr(training, "RAGGED", False)
    masked = train_probe_bank(*args, **kwargs)
    assert isinstance(ragged, training.RaggedProbeBank) and type(masked) is ProbeBank
    assert len(set(masked.best_epoch.tolist())) > 2  # probes stopped at different epochs: some were dropped
    assert not masked.active.all()
    torch.testing.assert_close(ragged.best_epoch, masked.best_epoch, rtol=0, atol=0)
    torch.testing.assert_close(ragged.best_loss, masked.best_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ragged.best_weight, masked.best_weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ragged.best_bias, masked.best_bias, rtol=1e-4, atol=1e-5)
    assert torch.all(ragged.best_weight[torch.as_tensor(masks) == 0] == 0)


def test_masks_that_are_not_nested_train_as_a_masked_bank():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(1, 60, 6)).astype(np.float32)
    y = (X[0, :, 0] > 0).astype(np.int64)
    masks = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0]], np.float32)
    bank = train_probe_bank(X[:, :50], y[:50], X[:, 50:], y[50:], 2, [0.0, 0.0], [0.0, 0.0], feature_mask=masks,
                            options=TrainingOptions(max_epochs=1))
    assert type(bank) is ProbeBank

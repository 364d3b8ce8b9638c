"""The probe bank's hand-written training step: closed-form gradients and chunked mini-batches."""
import numpy as np
import pytest
import torch

from probing import training
from probing.training import ProbeBank, train_probe_bank


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


@pytest.mark.parametrize("neurox_loss", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("input_index", [[0, 0, 1, 1, 2, 2], [2, 0, 1, 0, 2, 1], [1, 1, 1]])
def test_closed_form_gradients_equal_autograd(neurox_loss, masked, input_index):
    bank = _bank(neurox_loss, masked, input_index)
    X = torch.randn(3, 11, 7, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 0])
    grad_weight, grad_bias = bank.gradients(X, y)
    bank.zero_grad()
    bank.training_loss(X, y).sum().backward()
    torch.testing.assert_close(grad_weight, bank.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_bias, bank.bias.grad, rtol=1e-5, atol=1e-6)
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
    kwargs = dict(input_index=[0, 1], max_epochs=4, batch_size=16, patience=None)
    whole = train_probe_bank(*args, **kwargs)
    monkeypatch.setattr(training, "CHUNK_BYTES", 1)  # one mini-batch per Lightning step
    single = train_probe_bank(*args, **kwargs)
    torch.testing.assert_close(whole.best_weight, single.best_weight, rtol=0, atol=0)
    assert whole.adam_steps == single.adam_steps == 4 * 16  # ceil(250 / 16) steps per epoch

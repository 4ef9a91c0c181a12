"""The stacked trainer (pgen.stacked) against plain one-run-at-a-time training: nn.Module +
torch.optim + an explicit L2 term, written here independently."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgen.models import SmallCNN
from pgen.stacked import RunSpec, initial_weights, load_into, train_stack


def _data(n=72, side=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, side, side), generator=g) * 2 - 1
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def _train_alone(spec, optimizer, activation, x, y, train_size, epochs, batch_size):
    gen = torch.Generator().manual_seed(spec.seed)
    model = load_into(SmallCNN((1,), 10, activation=activation), initial_weights(spec, gen))
    idx = torch.randperm(x.shape[0], generator=gen)[:train_size]
    xs, ys = x[idx][:, None], y[idx]
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=spec.learning_rate)
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=spec.learning_rate, eps=1e-7)
    else:
        opt = torch.optim.RMSprop(model.parameters(), lr=spec.learning_rate, alpha=0.9, eps=1e-7)
    kernels = [m.weight for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
    for _ in range(epochs):
        order = torch.randperm(train_size, generator=gen)
        for s in range(train_size // batch_size):
            b = order[s * batch_size:(s + 1) * batch_size]
            loss = F.cross_entropy(model(xs[b]), ys[b]) + spec.l2reg * sum((k ** 2).sum() for k in kernels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [(m.weight.detach(), m.bias.detach()) for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]


def _stacked_final(specs, optimizer, activation, x, y, train_size, epochs, batch_size):
    final = {}

    def keep(epoch, step, r, weights, metrics):
        if epoch == epochs:
            final[r] = (weights, metrics)

    out = train_stack(specs, optimizer=optimizer, activation=activation, train_x=x, train_y=y, test_x=x[:20],
                      test_y=y[:20], train_size=train_size, epochs=epochs, checkpoint_epochs=[0, epochs],
                      batch_size=batch_size, on_checkpoint=keep)
    return [final[r] for r in range(len(specs))], out


SPECS = [RunSpec(3, 0.01, 1e-3, 0.0, "he_normal"), RunSpec(11, 0.003, 0.0, 0.0, "glorot_normal"),
         RunSpec(5, 0.02, 1e-4, 0.0, "orthogonal"), RunSpec(8, 0.005, 1e-2, 0.0, "TruncatedNormal", 0.1),
         RunSpec(2, 0.01, 0.0, 0.0, "RandomNormal", 0.2)]


@pytest.mark.parametrize("optimizer,activation", [("sgd", "relu"), ("adam", "tanh"), ("rmsprop", "relu")])
def test_stacked_training_matches_one_run_at_a_time(optimizer, activation):
    x, y = _data()
    stacked, _ = _stacked_final(SPECS, optimizer, activation, x, y, train_size=64, epochs=3, batch_size=16)
    for spec, (weights, _) in zip(SPECS, stacked):
        alone = _train_alone(spec, optimizer, activation, x, y, 64, 3, 16)
        for (k, b), (k0, b0) in zip(weights, alone):
            assert k.shape == k0.shape and b.shape == b0.shape
            torch.testing.assert_close(k, k0, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(b, b0, atol=2e-5, rtol=1e-4)
        # and training moved the weights: the check compares something
        init = initial_weights(spec, torch.Generator().manual_seed(spec.seed))
        assert max((k - k_init).abs().max().item() for (k, _), (k_init, _) in zip(weights, init)) > 1e-4


def test_a_run_does_not_depend_on_its_stack_companions():
    """With dropout: a run trained alone, and stacked with others in another order, ends with
    the same weights to float tolerance (each run's draws come from its own generator). Not
    bitwise: the convolution kernels block differently for another number of groups, which
    is why the zoo builder fixes each run's stack from the recipe."""
    x, y = _data()
    specs = [RunSpec(s, 0.01, 1e-4, d, "he_normal") for s, d in [(1, 77 / 256), (2, 0.0), (3, 154 / 256), (4, 26 / 256)]]
    together, _ = _stacked_final(specs, "adam", "relu", x, y, 48, 2, 16)
    alone, _ = _stacked_final(specs[2:3], "adam", "relu", x, y, 48, 2, 16)
    reordered, _ = _stacked_final(specs[::-1], "adam", "relu", x, y, 48, 2, 16)
    for (k, b), (k1, b1), (k2, b2) in zip(together[2][0], alone[0][0], reordered[1][0]):
        torch.testing.assert_close(k, k1, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(k, k2, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b, b1, atol=1e-5, rtol=1e-4)


def test_eval_metrics_and_l2_penalty_match_the_module():
    x, y = _data()
    spec = RunSpec(7, 0.01, 1e-3, 0.5, "he_normal")
    (weights, metrics), = _stacked_final([spec], "sgd", "relu", x, y, 48, 1, 16)[0]
    out = _stacked_final([spec], "sgd", "relu", x, y, 48, 1, 16)[1]
    model = load_into(SmallCNN((1,), 10, dropout=0.5), weights).eval()
    idx = out["indices"][0]
    with torch.no_grad():
        logits = model(x[idx][:, None])
        test_logits = model(x[:20][:, None])
    assert metrics["train_acc"] == pytest.approx((logits.argmax(1) == y[idx]).float().mean().item())
    assert metrics["train_loss"] == pytest.approx(F.cross_entropy(logits, y[idx]).item(), rel=1e-5)
    assert metrics["test_loss"] == pytest.approx(F.cross_entropy(test_logits, y[:20]).item(), rel=1e-5)
    assert metrics["l2_penalty"] == pytest.approx(1e-3 * sum((k.double() ** 2).sum().item() for k, _ in weights),
                                                  rel=1e-5)
    assert metrics["diverged"] is False


def test_a_diverging_run_is_frozen_finite_and_flagged_while_others_train():
    x, y = _data()
    specs = [RunSpec(1, 1e30, 0.0, 0.0, "he_normal"), RunSpec(2, 0.01, 0.0, 0.0, "he_normal")]
    (blown, m_blown), (fine, m_fine) = _stacked_final(specs, "sgd", "relu", x, y, 48, 2, 16)[0]
    assert m_blown["diverged"] and m_blown["diverged_step"] >= 1
    assert all(torch.isfinite(k).all() and torch.isfinite(b).all() for k, b in blown)
    assert not m_fine["diverged"]
    alone, = _stacked_final(specs[1:], "sgd", "relu", x, y, 48, 2, 16)[0]
    for (k, _), (k1, _) in zip(fine, alone[0]):
        torch.testing.assert_close(k, k1, atol=1e-5, rtol=1e-4)


def test_keras_initializer_scales():
    """he_normal and glorot_normal have the variance Keras intends (2/fan_in, 2/(fan_in+fan_out))
    after truncation at two stds; TruncatedNormal's std is the untruncated one (Keras's rule)."""
    gen = torch.Generator().manual_seed(0)
    w = initial_weights(RunSpec(0, 0.1, w_init="he_normal"), gen, filters=64)
    k = w[1][0]  # (64, 64, 3, 3): fan_in 576
    assert k.var().item() == pytest.approx(2 / 576, rel=0.05)
    assert k.abs().max().item() <= 2 * math.sqrt(2 / 576) / 0.87962566103423978 + 1e-6
    w = initial_weights(RunSpec(0, 0.1, w_init="glorot_normal"), gen, filters=64)
    assert w[1][0].var().item() == pytest.approx(2 / (576 + 576), rel=0.05)
    w = initial_weights(RunSpec(0, 0.1, w_init="TruncatedNormal", init_std=0.1), gen, filters=64)
    assert w[1][0].std().item() == pytest.approx(0.1 * 0.87962566103423978, rel=0.05)
    assert all((b == 0).all() for _, b in w)


def test_dropout_drops_at_its_rate_and_rescales():
    from pgen.stacked import _dropout_fn

    gens = [torch.Generator().manual_seed(s) for s in (0, 1, 2)]
    drop = _dropout_fn(gens, [77 / 256, 0.0, 200 / 256])
    h = torch.ones(64, 3 * 16, 13, 13).contiguous(memory_format=torch.channels_last)
    out = drop(h)
    for r, rate in enumerate([77 / 256, 0.0, 200 / 256]):
        part = out[:, r * 16:(r + 1) * 16]
        assert (part == 0).float().mean().item() == pytest.approx(rate, abs=0.01)
        assert torch.allclose(part[part != 0], torch.tensor(1 / (1 - rate)))
    with pytest.raises(Exception, match="1/256"):
        _dropout_fn(gens[:1], [0.3])

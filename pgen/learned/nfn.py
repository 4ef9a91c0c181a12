"""NFN: a permutation-invariant neural functional that predicts a network's accuracy from
its weights (Zhou et al., NeurIPS 2023, "Permutation Equivariant Neural Functionals",
arXiv:2302.14040; code: github.com/AllanYangZhou/nfn, ``experiments/predict_gen.py`` and
``experiments/models.py``; the NF-layers from the authors' ``nfn`` package on PyPI).

The network is the authors' ``InvariantNFN`` with its ``MlpHead`` as their prediction
configs set it (``predict_gen_configs/nfnet/hnp_inv.yaml``, ``np_inv.yaml``,
``head_cls/mlp.yaml``): three NF-layers of 16, 16 and 5 channels, each followed by a ReLU;
an invariant pooling layer (``HNPPool``, in both configs); an MLP of two hidden layers of
1000 units with ReLUs and one sigmoid output. ``mode="HNP"`` (their default for the CNN
zoos) uses ``HNPLinear`` and no input normalization; ``mode="NP"`` uses ``NPLinear`` with
learned input/output position embeddings (their "NP-PosEmb") and normalizes every weight
position by its mean and deviation over the training models (their ``NormalizingModule``:
deviations under 1e-5 become 1). Training as their ``main.yaml`` and the paper's Table 12:
Adam, learning rate 0.001, batch size 8, binary cross-entropy, 50 epochs, and the epoch
whose predictions on a validation part of the training models have the highest Kendall tau
is kept (their ``test_metric: tau``). Their validation part is 20% of the training models;
so is pgen's (drawn by the fold's seed).

Deviations, stated: targets outside [0, 1] (the generalization gap) are mapped onto [0, 1]
by the training models' minimum and maximum before the sigmoid and BCE, and predictions are
mapped back (Kendall tau does not change; the authors predicted test accuracy only). The
weight-space layout is read off the models (:mod:`pgen.learned.weightspace`).
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch
from torch import nn

__all__ = ["NFN_DEFAULTS", "InvariantNFN", "train_nfn", "network_spec"]

#: The authors' settings (predict_gen_configs; paper Table 12). ``epochs`` is the CPU budget knob.
NFN_DEFAULTS = {"hchannels": [16, 16, 5], "head_hidden": 1000, "epochs": 50, "batch_size": 8, "lr": 1e-3,
                "validation_fraction": 0.2}


def network_spec(weights, biases):
    """The ``nfn`` NetworkSpec of batched weight-space tensors."""
    from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat

    return network_spec_from_wsfeat(WeightSpaceFeatures([w[:1] for w in weights], [b[:1] for b in biases]))


class InvariantNFN(nn.Module):
    """The authors' ``InvariantNFN`` + ``MlpHead`` (module docstring), from the ``nfn`` layers."""

    def __init__(self, spec, mode: str = "HNP", hchannels=(16, 16, 5), head_hidden: int = 1000):
        from nfn.layers import HNPLinear, HNPPool, NPLinear, TupleOp

        super().__init__()
        if mode not in ("HNP", "NP"):
            raise ValueError(f"NFN mode must be 'HNP' or 'NP'; got {mode!r}")
        self.mode = mode
        self.normalize = mode == "NP"
        layers, prev = [], 1
        for ch in hchannels:
            layer = HNPLinear(spec, prev, ch) if mode == "HNP" else NPLinear(spec, prev, ch, io_embed=True)
            layers += [layer, TupleOp(nn.ReLU())]
            prev = ch
        self.features = nn.Sequential(*layers)
        pooled = prev * HNPPool.get_num_outs(spec)
        self.head = nn.Sequential(HNPPool(spec), nn.Flatten(start_dim=-2), nn.Linear(pooled, head_hidden), nn.ReLU(),
                                  nn.Linear(head_hidden, head_hidden), nn.ReLU(), nn.Linear(head_hidden, 1),
                                  nn.Sigmoid())
        self.n_layers = len(spec)
        for i in range(self.n_layers):  # identity unless set_stats (NP mode)
            for kind in ("weight", "bias"):
                self.register_buffer(f"mean_{kind}_{i}", torch.zeros(()))
                self.register_buffer(f"std_{kind}_{i}", torch.ones(()))

    def set_stats(self, weights, biases) -> None:
        """Per-position mean and deviation over the training models (the authors' StatTracker)."""
        for i, (w, b) in enumerate(zip(weights, biases)):
            for kind, t in (("weight", w), ("bias", b)):
                t = t.double()
                mean, std = t.mean(0), t.std(0, unbiased=False)
                std = torch.where(std < 1e-5, torch.ones_like(std), std)
                setattr(self, f"mean_{kind}_{i}", mean.float())
                setattr(self, f"std_{kind}_{i}", std.float())

    def forward(self, weights, biases) -> torch.Tensor:
        from nfn.common import WeightSpaceFeatures

        if self.normalize:
            weights = [(w - getattr(self, f"mean_weight_{i}")) / getattr(self, f"std_weight_{i}")
                       for i, w in enumerate(weights)]
            biases = [(b - getattr(self, f"mean_bias_{i}")) / getattr(self, f"std_bias_{i}")
                      for i, b in enumerate(biases)]
        return self.head(self.features(WeightSpaceFeatures(list(weights), list(biases)))).squeeze(-1)


def _tau(a, b) -> float:
    t = scipy.stats.kendalltau(a, b).statistic
    return -np.inf if not np.isfinite(t) else float(t)


@torch.no_grad()
def predict_nfn(net: InvariantNFN, weights, biases, *, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """The network's outputs (in [0, 1]) for batched weight-space tensors."""
    net.eval()
    out = []
    for s in range(0, len(weights[0]), batch_size):
        out.append(net([w[s:s + batch_size].to(device) for w in weights],
                       [b[s:s + batch_size].to(device) for b in biases]).cpu())
    return torch.cat(out).double().numpy()


def train_nfn(weights, biases, y: np.ndarray, *, mode: str = "HNP", seed: int = 0, device: str = "cpu",
              epochs: int = NFN_DEFAULTS["epochs"], batch_size: int = NFN_DEFAULTS["batch_size"],
              lr: float = NFN_DEFAULTS["lr"], validation_fraction: float = NFN_DEFAULTS["validation_fraction"],
              groups: np.ndarray | None = None, progress: bool = False) -> tuple[InvariantNFN, dict]:
    """Train an NFN on the models given as batched weight-space tensors, ``y`` in [0, 1].

    A ``validation_fraction`` of them (whole ``groups`` where given, drawn by ``seed``) picks
    the epoch; everything random (the split, the initial weights, the batch order) comes
    from ``seed``. Returns the network at its best epoch and a record of the training
    (validation tau per epoch, the best epoch, the models used).
    """
    n = len(y)
    rng = np.random.default_rng(seed)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    units = rng.permutation(np.unique(groups))
    n_val_units = max(1, int(round(validation_fraction * len(units)))) if len(units) > 2 else 0
    val_mask = np.isin(groups, units[:n_val_units])
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    torch.manual_seed(int(rng.integers(2**31)))
    spec = network_spec(weights, biases)
    net = InvariantNFN(spec, mode=mode)
    if net.normalize:
        net.set_stats([w[train_idx] for w in weights], [b[train_idx] for b in biases])
    net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.BCELoss()
    target = torch.tensor(np.asarray(y, dtype=np.float32))
    order_gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    best = (-np.inf, -1, None)
    history = []
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc=f"NFN ({mode}) on {len(train_idx)} models", unit="epoch")
    for epoch in epochs_iter:
        net.train()
        perm = torch.as_tensor(train_idx)[torch.randperm(len(train_idx), generator=order_gen)]
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            opt.zero_grad()
            pred = net([w[idx].to(device) for w in weights], [b[idx].to(device) for b in biases])
            loss = loss_fn(pred, target[idx].to(device))
            loss.backward()
            opt.step()
        if len(val_idx):
            pred = predict_nfn(net, [w[val_idx] for w in weights], [b[val_idx] for b in biases], device=device)
            tau = _tau(pred, y[val_idx])
        else:  # too few models to hold some out: the last epoch
            tau = float(epoch)
        history.append(tau)
        if progress and len(val_idx):
            epochs_iter.set_postfix(validation_tau=f"{tau:.3f}")
        if tau > best[0]:
            best = (tau, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[2])
    net.eval()
    return net, {"epochs": epochs, "best_epoch": best[1], "validation_tau": history if len(val_idx) else [],
                 "train_models": int(len(train_idx)), "validation_models": int(len(val_idx)),
                 "batch_size": batch_size, "lr": lr, "mode": mode, "seed": int(seed)}

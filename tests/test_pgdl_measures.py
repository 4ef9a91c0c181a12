"""The PGDL winners' measures against independent re-derivations of their authors' code.

Each test rebuilds the measure from the authors' definition in plain numpy (loops,
colorsys, hand-written bilinear sampling and Davies-Bouldin), on a tiny network with a
fixed seed, drawing the same random numbers in the same order as pgen does (the
distributions are the authors'; TF's random streams cannot be reproduced in torch).
"""

import colorsys
import itertools

import numpy as np
import pytest
import torch
from scipy.stats import trim_mean
from torch import nn

from pgen.measures import MeasureData, MeasureError, MeasureSettings, compute_measure, evaluate_measure
from pgen.measures import _image_ops as ops


def tiny_cnn(channels=3, seed=0, classes=3, size=8):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * size * size, classes)).eval()


def tiny_mlp(seed=0, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, classes)).eval()


def images(n, channels=3, seed=0, classes=3, size=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, size, size, generator=g)
    return MeasureData(x, torch.arange(n) % classes, num_classes=classes)


# --- numpy re-derivations of the TF operations ---------------------------------------

def np_bilinear(img, ys, xs):
    """Bilinear samples of a (C, H, W) image at pixel coordinates ys (rows) x xs (columns)."""
    c, h, w = img.shape
    out = np.zeros((c, len(ys), len(xs)))
    for i, y in enumerate(ys):
        y0 = int(np.floor(y)); y1 = min(y0 + 1, h - 1); wy = y - y0
        for j, x in enumerate(xs):
            x0 = int(np.floor(x)); x1 = min(x0 + 1, w - 1); wx = x - x0
            out[:, i, j] = ((1 - wy) * ((1 - wx) * img[:, y0, x0] + wx * img[:, y0, x1])
                            + wy * ((1 - wx) * img[:, y1, x0] + wx * img[:, y1, x1]))
    return out


def np_resize(img, h, w):
    """tf.image.resize bilinear with half-pixel centres."""
    _, ih, iw = img.shape
    ys = [max(0.0, (i + 0.5) * ih / h - 0.5) for i in range(h)]
    xs = [max(0.0, (j + 0.5) * iw / w - 0.5) for j in range(w)]
    return np_bilinear(img, ys, xs)


def np_crop_and_resize_center(img, s):
    _, h, w = img.shape
    y1 = 0.5 - s / 2
    ys = [(h - 1) * (y1 + i * s / (h - 1)) for i in range(h)]
    xs = [(w - 1) * (y1 + j * s / (w - 1)) for j in range(w)]
    return np_bilinear(img, ys, xs)


def np_hsv_map(img, fn):
    out = np.empty_like(img)
    for a in range(img.shape[1]):
        for b in range(img.shape[2]):
            out[:, a, b] = colorsys.hsv_to_rgb(*fn(*colorsys.rgb_to_hsv(*img[:, a, b])))
    return out


def np_saturate(img, f):
    return np_hsv_map(img, lambda h, s, v: (h, min(1.0, max(0.0, s * f)), v))


def np_sobel_dx(img):
    k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    p = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    c, h, w = img.shape
    return np.array([[[np.sum(p[ch, i:i + 3, j:j + 3] * k) for j in range(w)] for i in range(h)] for ch in range(c)])


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_image_ops_against_colorsys_and_loops():
    x = torch.rand(3, 3, 6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    img = x[1].numpy()
    assert np.allclose(ops.adjust_saturation(x, 0.7)[1].numpy(), np_saturate(img, 0.7), atol=1e-12)
    assert np.allclose(ops.adjust_hue(x, 0.04)[1].numpy(),
                       np_hsv_map(img, lambda h, s, v: ((h + 0.04) % 1.0, s, v)), atol=1e-12)
    assert np.allclose(ops.sobel_dx(x)[1].numpy(), np_sobel_dx(img), atol=1e-12)
    assert np.allclose(ops.crop_and_resize_center(x, 0.87)[1].numpy(), np_crop_and_resize_center(img, 0.87),
                       atol=1e-12)
    assert np.allclose(ops.resize_bilinear(x[:, :, :4, :3], (6, 5))[1].numpy(), np_resize(img[:, :4, :3], 6, 5),
                       atol=1e-12)
    # TF's central_crop rounding: 32 -> rows 1..30, 8 -> unchanged, 28 -> rows 1..26
    assert [ops.central_crop(torch.zeros(1, 1, s, s), 0.9).shape[-1] for s in (32, 8, 28)] == [30, 8, 26]
    # grey images: to RGB, any saturation, back to grey leaves TF's weights' sum, 0.9999
    g = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    grey = ops.rgb_to_grayscale(ops.adjust_saturation(ops.grayscale_to_rgb(g), 1.4))
    assert torch.allclose(grey, g * 0.9999, atol=1e-12)


# --- augmentation robustness (PGDL 2nd place) -----------------------------------------

def np_robustness(model, x, seed):
    """The runner-up's loop: batches of 64, seven augmentations, penalties 6,1,2,3,1,12,2."""
    g = torch.Generator().manual_seed(seed)
    penalties = [6, 1, 2, 3, 1, 12, 2]

    def predict(batch):
        with torch.no_grad():
            return softmax(model(torch.as_tensor(np.ascontiguousarray(batch), dtype=torch.float32)).double().numpy())

    score = 0.0
    for start in range(0, len(x), 64):
        xb = x[start:start + 64].double().numpy()
        n, c, h, w = xb.shape
        f_sat = 0.6 + float(torch.rand(1, generator=g, dtype=torch.float64))
        f_sat2 = 0.6 + float(torch.rand(1, generator=g, dtype=torch.float64))
        top = int((h - h * 0.9) / 2)
        flipped = xb[:, :, :, ::-1]
        erased = xb.copy()
        area = h * w
        low, up = int(round(np.sqrt(0.02 * area * 0.3))), int(round(np.sqrt(0.4 * area / 0.3)))
        for i in range(n):
            eh = int(torch.randint(low, min(up, h), (1,), generator=g))
            ew = int(torch.randint(low, min(up, w), (1,), generator=g))
            t = int(torch.randint(0, h - eh, (1,), generator=g))
            le = int(torch.randint(0, w - ew, (1,), generator=g))
            erased[i, :, t:t + eh, le:le + ew] = 0
        augmented = [
            flipped,
            [np_saturate(im, f_sat) for im in xb],
            [np_resize(im[:, top:h - top, top:w - top], h, w) for im in xb],
            [np_sobel_dx(im) / 4 + 0.5 for im in xb],
            xb + 0.5,
            [np_saturate(im, f_sat2) for im in flipped],
            erased,
        ]
        p = predict(xb)
        for aug, penalty in zip(augmented, penalties):
            q = predict(aug)
            for i in range(n):
                score += abs(p[i].max() - q[i].max()) if p[i].argmax() == q[i].argmax() else penalty
    return score


def test_augmentation_robustness_is_the_runner_ups_loop():
    data = images(70)  # two batches: 64 + 6
    model = tiny_cnn(seed=3)
    value = compute_measure("augmentation_robustness", model, None, data, MeasureSettings(seed=7))
    assert value == pytest.approx(np_robustness(model, data.x, 7), rel=1e-5)
    assert value > 0


def test_augmentation_robustness_is_zero_for_a_constant_model_and_needs_images():
    data = images(20)
    const = nn.Sequential(nn.Flatten(), nn.Linear(192, 3)).eval()
    with torch.no_grad():
        const[1].weight.zero_()
        const[1].bias.copy_(torch.tensor([1.0, 2.0, 0.0]))
    assert compute_measure("augmentation_robustness", const, None, data) == 0.0
    with pytest.raises(MeasureError, match="image inputs"):
        compute_measure("augmentation_robustness", tiny_mlp(), None, MeasureData(torch.zeros(4, 4), torch.zeros(4).long()))


def test_erase_bounds_follow_the_code():
    from pgen.measures.augmentation_robustness import erase_bounds

    # 32x32: low round(sqrt(6.144)) = 2, up round(sqrt(1365.3)) = 37 -> capped at 32
    assert erase_bounds(32, 32) == (2, 32, 32)
    assert erase_bounds(8, 8) == (1, 8, 8)


# --- label variation (PGDL 3rd place) ------------------------------------------------

def test_label_variation_is_lassance_et_al():
    from pgen.measures.label_variation import class_balanced_indices, mixup_draws

    g0 = torch.Generator().manual_seed(0)
    x = torch.randn(90, 4, generator=g0)
    y = torch.arange(90) % 3
    data = MeasureData(x, y)
    model = tiny_mlp(seed=11)
    value = compute_measure("label_variation", model, None, data, MeasureSettings(seed=4))

    g = torch.Generator().manual_seed(4)
    idx = class_balanced_indices(y, 3, g)
    perm, lam = mixup_draws(len(idx), g)
    assert len(idx) == 3 * (500 // 3) and np.bincount(y[idx].numpy()).tolist() == [166] * 3
    xs, ys, lam, perm = x[idx].double().numpy(), y[idx].numpy(), lam.numpy(), perm.numpy()
    mixed = lam[:, None] * xs + (1 - lam[:, None]) * xs[perm]
    onehot = np.eye(3)[ys]
    soft = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[perm]
    with torch.no_grad():
        f = model[:-1](torch.as_tensor(mixed, dtype=torch.float32)).double().numpy()  # the last layer's input
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    n = len(f)
    d = np.array([[np.sum((f[i] - f[j]) ** 2) for j in range(n)] for i in range(n)])
    sim = np.exp(-d / (3 * np.std(d)))
    adj = np.zeros((n, n))
    for i in range(n):
        second = np.sort(sim[i])[-2]
        adj[i] = sim[i] >= second
        adj[i, i] = 0
    deg = adj.sum(1) ** -0.5
    lap = np.eye(n) - np.diag(deg) @ adj @ np.diag(deg)
    expected = np.trace(soft.T @ lap @ soft) / 2000
    assert value == pytest.approx(expected, rel=1e-6)


def test_label_variation_draws():
    from pgen.measures.label_variation import class_balanced_indices, mixup_draws

    y = torch.tensor([0] * 7 + [1] * 300 + [2] * 40)
    idx = class_balanced_indices(y, 3, torch.Generator().manual_seed(0))
    assert np.bincount(y[idx].numpy()).tolist() == [166, 166, 166]  # class 0 cycled
    assert len(set(idx[:7].tolist())) == 7  # each pass over a small class is a permutation
    _, lam = mixup_draws(200_000, torch.Generator().manual_seed(1))
    assert float(lam.mean()) == pytest.approx(0.5, abs=0.003)
    assert float(lam.var()) == pytest.approx(1 / 20, abs=0.001)  # Beta(2, 2): variance 1/20
    with pytest.raises(MeasureError, match="class 1 has none"):
        class_balanced_indices(torch.tensor([0, 0, 2]), 3, torch.Generator())


# --- DB index x mixup (PGDL 1st place) --------------------------------------------------

def np_davies_bouldin(f, labels):
    ks = sorted(set(labels.tolist()))
    cents = [f[labels == k].mean(0) for k in ks]
    intra = [np.mean([np.linalg.norm(v - c) for v in f[labels == k]]) for k, c in zip(ks, cents)]
    worst = []
    for i in range(len(ks)):
        worst.append(max((intra[i] + intra[j]) / np.linalg.norm(cents[i] - cents[j])
                         for j in range(len(ks)) if j != i))
    return np.mean(worst)


def np_labelwise_mixup_accuracy(model, x, y, classes):
    size = 10 * classes
    idx = [i % len(x) for i in range(size * 10)]
    per_label = []
    for label in range(classes):
        accs = []
        for b in range(10):
            members = [x[i] for i in idx[b * size:(b + 1) * size] if y[i] == label]
            pairs = [0.5 * members[i] + 0.5 * members[j] for i, j in itertools.combinations(range(len(members)), 2)]
            if pairs:
                with torch.no_grad():
                    pred = model(torch.stack(pairs)).argmax(1)
                accs.append(float((pred == label).double().mean()))
        per_label.append(np.mean(accs))
    return np.mean(per_label)


def test_dbi_mixup_is_natekar_and_sharma_on_a_cnn():
    from pgen.measures._util import shuffled_stream

    data = images(150, channels=1, classes=3)
    model = tiny_cnn(channels=1, seed=5)
    r = evaluate_measure("dbi_mixup", model, None, data, MeasureSettings(seed=2))

    idx = shuffled_stream(150, 1200, torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = torch.relu(model[0](data.x[idx])).double().numpy()  # the conv layer with its activation
    pooled = h.reshape(len(h), 4, 2, 4, 2, 4).max(axis=(3, 5)).reshape(len(h), -1)  # 4x4 max-pool of 8x8
    labels = data.y[idx].numpy()
    db = np.mean([np_davies_bouldin(pooled[a:a + 120], labels[a:a + 120]) for a in range(0, 1200, 120)])
    acc = np_labelwise_mixup_accuracy(model, data.x, data.y, 3)
    assert r.extra == pytest.approx({"adapted": 0.0, "db": db, "mixup_accuracy": acc}, rel=1e-9)
    assert r.value == pytest.approx(db * (1 - acc), rel=1e-9)


def test_dbi_mixup_on_an_mlp_uses_the_first_dense_layer_and_says_so():
    from pgen.measures._util import shuffled_stream

    g0 = torch.Generator().manual_seed(0)
    x = torch.randn(130, 4, generator=g0)
    data = MeasureData(x, torch.arange(130) % 3)
    model = tiny_mlp(seed=6)
    r = evaluate_measure("dbi_mixup", model, None, data, MeasureSettings(seed=1))
    idx = shuffled_stream(130, 1200, torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = torch.relu(model[0](x[idx])).double().numpy()
    labels = data.y[idx].numpy()
    db = np.mean([np_davies_bouldin(h[a:a + 120], labels[a:a + 120]) for a in range(0, 1200, 120)])
    assert r.extra["adapted"] == 1.0
    assert r.extra["db"] == pytest.approx(db, rel=1e-9)


# --- normalised margins (PGDL 1st place) -------------------------------------------------

def np_normalized_margin(w_out, h, logits, y):
    """Margins with the analytic gradient: logits = w_out @ h + b, so d(z_y - z_j)/dh = w_out[y] - w_out[j]."""
    out = []
    for i in range(len(y)):
        z = logits[i]
        j = max((c for c in range(len(z)) if c != y[i]), key=lambda c: z[c])
        out.append((z[y[i]] - z[j]) / (np.linalg.norm(w_out[y[i]] - w_out[j]) + 1e-7))
    sigma = np.sqrt(trim_mean(np.var(h, axis=0), proportiontocut=0.05))
    return np.mean(np.array(out) / (sigma + 1e-7))


def test_mixup_margin_is_the_winners_normalised_margin():
    from pgen.measures._util import shuffled_stream

    g0 = torch.Generator().manual_seed(3)
    x = torch.randn(80, 4, generator=g0)
    y = torch.arange(80) % 3
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    value = compute_measure("mixup_margin", model, None, MeasureData(x, y), MeasureSettings(seed=8))

    g = torch.Generator().manual_seed(8)
    idx = shuffled_stream(80, 500, g)
    hs, zs, ys = [], [], []
    for a in range(0, 500, 50):
        xb, yb = x[idx[a:a + 50]], y[idx[a:a + 50]]
        order = torch.argsort(yb, stable=True)
        xb, yb = xb[order], yb[order]
        partner = torch.arange(50)
        for label in torch.unique(yb):
            members = torch.nonzero(yb == label).flatten()
            partner[members] = members[torch.randperm(len(members), generator=g)]
        mixed = (xb + xb[partner]) / 2
        with torch.no_grad():
            hs.append(torch.relu(model[0](mixed)).double().numpy())
            zs.append(model(mixed).double().numpy())
        ys.append(yb.numpy())
    expected = np_normalized_margin(model[2].weight.detach().double().numpy(), np.concatenate(hs),
                                    np.concatenate(zs), np.concatenate(ys))
    assert value == pytest.approx(expected, rel=1e-5)


def test_augment_margin_is_the_winners_normalised_margin_on_their_augmentations():
    from pgen.measures._image_ops import uniform
    from pgen.measures._util import shuffled_stream

    data = images(60, channels=3, classes=3)
    model = tiny_cnn(channels=3, seed=12)
    value = compute_measure("augment_margin", model, None, data, MeasureSettings(seed=3))

    g = torch.Generator().manual_seed(3)
    idx = shuffled_stream(60, 500, g)
    hs, zs, ys = [], [], []
    for a in range(0, 500, 50):
        xb = data.x[idx[a:a + 50]].double().numpy()
        n = len(xb)
        flip = (torch.rand(n, generator=g) < 0.5).numpy()
        hue = uniform(n, -0.05, 0.05, g).numpy()
        sat = uniform(n, 0.6, 1.2, g).numpy()
        bright = uniform(n, -0.05, 0.05, g).numpy()
        contrast = uniform(n, 0.7, 1.0, g).numpy()
        zoom = (torch.rand(n, generator=g) < 0.5).numpy()
        scales = np.arange(0.85, 1.0, 0.01)  # 16 values: the last is 1.0 up to rounding
        scale = scales[torch.randint(len(scales), (n,), generator=g).numpy()]
        out = []
        for i, im in enumerate(xb):
            im = im[:, :, ::-1] if flip[i] else im
            im = np_hsv_map(im, lambda h, s, v: ((h + hue[i]) % 1.0, s, v))
            im = np_saturate(im, sat[i]) + bright[i]
            mean = im.mean(axis=(1, 2), keepdims=True)
            im = (im - mean) * contrast[i] + mean
            out.append(np_crop_and_resize_center(im, scale[i]) if zoom[i] else im)
        xa = torch.as_tensor(np.array(out), dtype=torch.float32)
        with torch.no_grad():
            hs.append(torch.relu(model[0](xa)).reshape(n, -1).double().numpy())
            zs.append(model(xa).double().numpy())
        ys.append(data.y[idx[a:a + 50]].numpy())
    expected = np_normalized_margin(model[3].weight.detach().double().numpy(), np.concatenate(hs),
                                    np.concatenate(zs), np.concatenate(ys))
    assert value == pytest.approx(expected, rel=1e-4)


def test_a_wrong_model_has_a_negative_margin():
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(40, dtype=torch.long)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].weight[1].fill_(0.1)  # class 1 always wins while the label is 0
        model[2].bias.copy_(torch.tensor([0.0, 1.0]))
    assert compute_measure("mixup_margin", model, None, MeasureData(x, y, num_classes=2)) < 0

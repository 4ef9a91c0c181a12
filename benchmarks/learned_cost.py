"""What the learned predictors cost per model, beside a baseline measured in the same run:
one forward pass of the same model over 1000 samples (what any measure that reads data
pays at least).

    python benchmarks/learned_cost.py                        # smallcnn-mnist5k's final models
    python benchmarks/learned_cost.py --synthetic 400        # random Small CNNs (no zoo needed)
    python benchmarks/learned_cost.py --synthetic 200 --device cuda   # + CUDA against the CPU

Printed per predictor: features (StatNN) or weight-space tensors (NFN) per model, one
training epoch over the models at the authors' batch size 8 (NFN) or the whole fit
(StatNN), and prediction per model, batched (256) and one at a time (as `pgen score
--predictor` calls it). On CUDA it also checks that an NFN predicts on the device what it
predicts on the CPU (float32, within 1e-4).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _models(args):
    from pgen.models import SmallCNN

    if args.synthetic:
        out = []
        for i in range(args.synthetic):
            torch.manual_seed(i)
            out.append(SmallCNN((1, 28, 28), 10).eval())
        return out, "synthetic Small CNNs (random weights)"
    from pgen.zoo import load_zoo

    zoo = load_zoo(args.zoo, build=False, progress=False).final_models()
    ids = [e.id for e in zoo][: args.limit]
    return [zoo[i].load_model().eval() for i in ids], f"{zoo.name} final models"


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo", default="smallcnn-mnist5k")
    p.add_argument("--limit", type=int, default=400, help="models read from the zoo (default 400)")
    p.add_argument("--synthetic", type=int, default=0, help="use N random Small CNNs instead of a zoo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    from pgen.learned.nfn import InvariantNFN, network_spec, predict_nfn
    from pgen.learned.statnn import fit_trees, statnn_features
    from pgen.learned.weightspace import weight_layout, weight_space

    dev = args.device
    models, what = _models(args)
    n = len(models)
    print(f"{n} {what}; device {dev}; torch threads {torch.get_num_threads()}; best of {args.repeat}")
    x = torch.randn(1000, 1, 28, 28, device=dev)
    probe = [m.to(dev) for m in models[:20]]

    def forward():
        with torch.no_grad():
            for m in probe:
                for s in range(0, 1000, 256):
                    m(x[s:s + 256])
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    base = _best(forward, args.repeat) / len(probe)
    for m in probe:
        m.cpu()
    print(f"baseline: one forward pass over 1000 samples: {1000 * base:.2f} ms per model")
    rows = []

    feats = []
    t_feat = _best(lambda: feats.append(np.stack([statnn_features(m) for m in models])), 1) / n
    y = np.random.default_rng(0).random(n)
    t_fit = _best(lambda: fit_trees(feats[0], y), 1)
    rows.append(("statnn", t_feat, t_fit, "whole fit", None, None))

    layout = weight_layout(models[0])
    t_ws = _best(lambda: weight_space(models, layout), 1) / n
    w, b = weight_space(models, layout)
    for mode in ("HNP", "NP"):
        torch.manual_seed(0)
        net = InvariantNFN(network_spec(w, b), mode=mode)
        if net.normalize:
            net.set_stats(w, b)
        net.to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        target = torch.rand(n, device=dev)
        wd, bd = [t.to(dev) for t in w], [t.to(dev) for t in b]

        def epoch():
            net.train()
            for s in range(0, n, 8):
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy(net([t[s:s + 8] for t in wd], [t[s:s + 8] for t in bd]),
                                                                target[s:s + 8])
                loss.backward()
                opt.step()
            if dev.startswith("cuda"):
                torch.cuda.synchronize()

        t_epoch = _best(epoch, 1)
        t_batch = _best(lambda: predict_nfn(net, w, b, device=dev), args.repeat) / n
        singles = [_best(lambda: predict_nfn(net, [t[i:i + 1] for t in w], [t[i:i + 1] for t in b], device=dev), 1)
                   for i in range(min(n, 50))]
        rows.append((f"nfn ({mode})", t_ws, t_epoch, f"one epoch of {n} models", t_batch, statistics.median(singles)))
        if dev.startswith("cuda"):
            cpu = predict_nfn(net.cpu(), w, b, device="cpu")
            gpu = predict_nfn(net.to(dev), w, b, device=dev)
            diff = float(np.abs(cpu - gpu).max())
            print(f"nfn ({mode}): CUDA vs CPU predictions, largest difference {diff:.2e} "
                  f"({'ok' if diff < 1e-4 else 'TOO LARGE'})")
            if diff >= 1e-4:
                raise SystemExit(1)
    print(f"\n{'predictor':<12} {'input/model':>12} {'fit':>10} {'(what)':<26} {'predict/model':>14} "
          f"{'one at a time':>14} {'predict / baseline':>19}")
    for name, t_in, t_fit, label, t_pred, t_one in rows:
        if t_pred is None:  # StatNN: its prediction is its features plus the trees
            t_pred = t_one = t_in
        print(f"{name:<12} {1000 * t_in:>9.3f} ms {t_fit:>8.2f} s  {label:<26} {1000 * t_pred:>11.3f} ms "
              f"{1000 * t_one:>11.3f} ms {t_one / base:>18.2f}x")


if __name__ == "__main__":
    main()

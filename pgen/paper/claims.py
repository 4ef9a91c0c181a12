"""The paper's claims, measured from the saved P-vectors and spectra alone.

Every number here is computed from ``pvectors.npz`` (float32 vectors, angles by
:func:`pgen.pvector.angle` in float64)
and the checkpoint / spectrum tables, so a reader can recompute any of them with numpy.
Intervals are 95% Student-t intervals over independent training runs (or over seeds where
a number pairs the runs of one seed); a verdict is "holds" only when the interval resolves
it, with the rule stated in the table.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from pgen.paper.experiments import CENTERINGS, CLASSIFIERS, TOP_K
from pgen.pvector import angle

__all__ = ["ClaimInputs", "compute_claims", "t_interval"]

SMALL = 10.0  # degrees: the paper's "small" (under 10 degrees on CIFAR, abstract / A.1)
RISE = 1.0  # degrees: a rise or fall within epoch 1 must exceed this to count


def t_interval(values) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of a 95% Student-t interval; low = high = NaN for n < 2."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan, len(v)
    h = float(sps.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - h, m + h, len(v)


def _spearman(x, y) -> float:
    """Spearman's rho, NaN for fewer than 3 points (a per-run statistic that cannot be had)."""
    return float(sps.spearmanr(x, y)[0]) if len(x) > 2 else math.nan


def _fmt(ci, unit="deg") -> str:
    m, lo, hi, n = ci
    u = "°" if unit == "deg" else ""
    if not np.isfinite(lo):
        return f"{m:.2f}{u} (n={n}, no interval)"
    return f"{m:.2f}{u} [{lo:.2f}, {hi:.2f}]"


def _verdict(conditions: list[bool]) -> str:
    if all(conditions):
        return "holds"
    return "partly" if any(conditions) else "does not hold"


class ClaimInputs:
    """The saved study: vectors, checkpoint metrics, spectra and bootstrap angles."""

    def __init__(self, vectors: dict, checkpoints: pd.DataFrame, spectra: pd.DataFrame, bootstrap: pd.DataFrame,
                 settings: dict):
        self.vectors = vectors
        self.checkpoints = checkpoints
        self.spectra = spectra
        self.bootstrap = bootstrap
        self.settings = settings
        self.runs = sorted(checkpoints["run"].unique())
        self.final = checkpoints.groupby("run")["step"].max().to_dict()
        self.paradigms = [p for p in settings["paradigms"] if p in set(checkpoints["paradigm"])]
        self.seeds = sorted(checkpoints["seed"].unique())

    def vec(self, run, step, layer, samples, centering, k=0) -> np.ndarray:
        return self.vectors[f"{run}|s{step}|{layer}|{samples}|{centering}"][k]

    def data(self, samples, centering, k=0) -> np.ndarray:
        return self.vectors[f"data|s0|input|{samples}|{centering}"][k]

    def epoch_steps(self, run) -> pd.DataFrame:
        c = self.checkpoints
        return c[(c["run"] == run) & c["is_epoch_end"]].sort_values("step")

    def epoch1_steps(self, run) -> pd.DataFrame:
        c = self.checkpoints
        return c[(c["run"] == run) & c["iteration_in_epoch1"].notna()].sort_values("step")

    def same_seed_pairs(self):
        """(seed, run a, run b) for every pair of paradigms trained from the same seed."""
        for seed in self.seeds:
            runs = [f"{p}-seed{seed}" for p in self.paradigms]
            for i, a in enumerate(runs):
                for b in runs[i + 1:]:
                    yield seed, a, b

    def other_seed(self, run) -> str | None:
        paradigm, seed = run.rsplit("-seed", 1)
        seeds = self.seeds
        if len(seeds) < 2:
            return None
        nxt = seeds[(seeds.index(int(seed)) + 1) % len(seeds)]
        return f"{paradigm}-seed{nxt}"


def compute_claims(ci: ClaimInputs) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The claims table (one row per claim, both centerings) and the raw tables per claim."""
    rows, tables = [], {}
    for fn in (_c1, _c2, _c3, _c4, _c5, _c6, _c7, _c8, _c9, _c10, _stability):
        row, table = fn(ci)
        rows.append(row)
        tables[row["file"]] = table
    return pd.DataFrame(rows), tables


def _row(claim, paper, rule, file, per_centering: dict) -> dict:
    row = {"claim": claim, "paper": paper, "rule": rule, "file": file}
    for tag, _ in CENTERINGS:
        measured, verdict = per_centering[tag]
        row[f"{tag}_measured"] = measured
        row[f"{tag}_verdict"] = verdict
    return row


# ---------------------------------------------------------------------------- claims


def _c1(ci: ClaimInputs):
    out = []
    for tag, _ in CENTERINGS:
        for seed, a, b in ci.same_seed_pairs():
            out.append({"centering": tag, "seed": seed, "model_a": a, "model_b": b,
                        "angle_trained": angle(ci.vec(a, ci.final[a], "feature", "test", tag),
                                               ci.vec(b, ci.final[b], "feature", "test", tag)),
                        "angle_init": angle(ci.vec(a, 0, "feature", "test", tag), ci.vec(b, 0, "feature", "test", tag))})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        per_seed = t[t["centering"] == tag].groupby("seed")[["angle_trained", "angle_init"]].mean()
        tr = t_interval(per_seed["angle_trained"])
        diff = t_interval(per_seed["angle_trained"] - per_seed["angle_init"])
        init = t_interval(per_seed["angle_init"])
        res[tag] = (f"trained pairs {_fmt(tr)}; same pairs at init {_fmt(init)}; change {_fmt(diff)}",
                    _verdict([tr[2] < SMALL, diff[2] < 0]))
    return _row("C1 common subspace across paradigms", "cosine close to 1; under 10° on CIFAR (abstract, A.0, A.3)",
                f"holds: interval of the trained cross-paradigm angle below {SMALL:g}° and below the same pairs "
                "at init; partly: one of the two", "c1_common_subspace.csv", res), t


def _c2(ci: ClaimInputs):
    out = []
    for run in ci.runs:
        other = ci.other_seed(run)
        for _, r in ci.epoch_steps(run).iterrows():
            for tag, _ in CENTERINGS:
                v = ci.vec(run, r["step"], "feature", "test", tag)
                out.append({"run": run, "paradigm": r["paradigm"], "epoch": r["epoch"], "step": r["step"],
                            "centering": tag,
                            "angle_to_own_final": angle(v, ci.vec(run, ci.final[run], "feature", "test", tag)),
                            "angle_to_other_seed_final": (
                                angle(v, ci.vec(other, ci.final[other], "feature", "test", tag)) if other
                                else math.nan)})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        init = t_interval(d[d["step"] == 0]["angle_to_own_final"])
        rhos = []
        for run, g in d.groupby("run"):
            g = g[g["step"] < ci.final[run]]  # the reference itself is 0 by construction
            rhos.append(_spearman(g["epoch"], g["angle_to_own_final"]))
        rho = t_interval(rhos)
        res[tag] = (f"at init {_fmt(init)}; Spearman rho(epoch, angle) {_fmt(rho, '')}",
                    _verdict([init[1] > 45, rho[2] < 0 and rho[0] <= -0.8]))
    return _row("C2 angle to the well-trained model falls during training",
                "70-80° at init, falls quasi-monotonically per epoch to a small angle (abstract, A.1)",
                "holds: init interval above 45° and mean rho <= -0.8 with its interval below 0; partly: one",
                "c2_training_dynamics.csv", res), t


def _rise_fall(curve: np.ndarray) -> tuple[float, float]:
    peak = float(np.max(curve[1:])) if len(curve) > 1 else math.nan
    return peak - float(curve[0]), peak - float(curve[-1])


def _c3(ci: ClaimInputs):
    out = []
    for run in ci.runs:
        for _, r in ci.epoch1_steps(run).iterrows():
            for tag, _ in CENTERINGS:
                out.append({"run": run, "paradigm": r["paradigm"], "iteration": r["step"], "centering": tag,
                            "angle_to_own_final": angle(ci.vec(run, r["step"], "feature", "test", tag),
                                                        ci.vec(run, ci.final[run], "feature", "test", tag))})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        rf = [_rise_fall(g.sort_values("iteration")["angle_to_own_final"].to_numpy())
              for _, g in t[t["centering"] == tag].groupby("run")]
        rise, fall = t_interval([a for a, _ in rf]), t_interval([b for _, b in rf])
        res[tag] = (f"rise above init {_fmt(rise)}; fall from the peak by the end of epoch 1 {_fmt(fall)}",
                    _verdict([rise[1] > RISE, fall[1] > RISE]))
    return _row("C3 within epoch 1 the angle first rises, then falls", "non-monotonic in the first epoch (A.2)",
                f"holds: intervals of the rise and of the fall both above {RISE:g}°; partly: one",
                "c3_first_epoch.csv", res), t


def _c4(ci: ClaimInputs):
    out = []
    for seed in ci.seeds:
        for p in ci.paradigms:
            run = f"{p}-seed{seed}"
            for q in ci.paradigms:
                if q == p:
                    continue
                ref = f"{q}-seed{seed}"
                for _, r in ci.epoch_steps(run).iterrows():
                    for tag, _ in CENTERINGS:
                        out.append({"seed": seed, "paradigm": p, "reference": q, "epoch": r["epoch"],
                                    "step": r["step"], "centering": tag,
                                    "angle": angle(ci.vec(run, r["step"], "feature", "test", tag),
                                                   ci.vec(ref, ci.final[ref], "feature", "test", tag))})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        conv, decreases = 0, []
        pairs = d.groupby(["paradigm", "reference"])
        for _, g in pairs:
            per_seed = [gs.sort_values("step")["angle"].iloc[0] - gs.sort_values("step")["angle"].iloc[-1]
                        for _, gs in g.groupby("seed")]
            c = t_interval(per_seed)
            conv += int(c[1] > 0)
            decreases.append(c[0])
        res[tag] = (f"{conv} of {len(pairs)} (paradigm, reference) pairs closer at the end than at init (interval of "
                    f"the decrease above 0); median decrease {np.median(decreases):.2f}°",
                    _verdict([conv == len(pairs), conv > 0]))
    return _row("C4 every paradigm converges toward every paradigm's reference",
                "consistent convergence to supervised, autoencoder and self-supervised references (A.3)",
                "holds: every pair's decrease resolved above 0; partly: some", "c4_cross_paradigm.csv", res), t


def _c5(ci: ClaimInputs):
    out = []
    for run in ci.runs:
        epoch1 = ci.epoch1_steps(run)
        steps = pd.concat([epoch1, ci.epoch_steps(run)]).drop_duplicates("step").sort_values("step")
        for _, r in steps.iterrows():
            for tag, _ in CENTERINGS:
                out.append({"run": run, "paradigm": r["paradigm"], "step": r["step"], "epoch": r["epoch"],
                            "in_epoch1": bool(r["step"] <= epoch1["step"].max()), "centering": tag,
                            "is_epoch_end": bool(r["is_epoch_end"]),
                            "angle_to_data": angle(ci.vec(run, r["step"], "feature", "train", tag),
                                                   ci.data("train", tag))})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        rf, rhos = [], []
        for _, g in d.groupby("run"):
            rf.append(_rise_fall(g[g["in_epoch1"]].sort_values("step")["angle_to_data"].to_numpy()))
            e = g[g["is_epoch_end"] & (g["epoch"] >= 1)]
            rhos.append(_spearman(e["epoch"], e["angle_to_data"]))
        rise, fall, rho = t_interval([a for a, _ in rf]), t_interval([b for _, b in rf]), t_interval(rhos)
        res[tag] = (f"epoch-1 rise {_fmt(rise)}, fall {_fmt(fall)}; after epoch 1 Spearman rho(epoch, angle) "
                    f"{_fmt(rho, '')}", _verdict([rise[1] > RISE and fall[1] > RISE, rho[2] < 0]))
    return _row("C5 model-to-data angle (training samples): non-monotonic in epoch 1, then decreasing",
                "rises then falls in epoch 1, then decreases (A.4; trained with random augmentation)",
                f"holds: epoch-1 rise and fall both resolved above {RISE:g}° and the later rho's interval below 0; "
                "partly: one", "c5_model_to_data.csv", res), t


def _c6(ci: ClaimInputs):
    out = []
    for run in ci.runs:
        paradigm = run.rsplit("-seed", 1)[0]
        if paradigm not in CLASSIFIERS:
            continue
        layers = sorted({k.split("|")[2] for k in ci.vectors if k.startswith(f"{run}|s0|")} - {"feature"},
                        key=lambda s: int(s) if s.isdigit() else s)
        for _, r in ci.epoch_steps(run).iterrows():
            for depth, layer in enumerate(layers + ["feature"], 1):
                for tag, _ in CENTERINGS:
                    out.append({"run": run, "paradigm": paradigm, "epoch": r["epoch"], "step": r["step"],
                                "depth": depth, "layer": layer, "centering": tag,
                                "angle_to_data": angle(ci.vec(run, r["step"], layer, "train", tag),
                                                       ci.data("train", tag))})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        early, late = [], []
        for run, g in d.groupby("run"):
            for which, target in ((1, early), (g["epoch"].max(), late)):
                h = g[g["epoch"] == which]
                target.append(_spearman(h["depth"], h["angle_to_data"]))
        e, lt = t_interval(early), t_interval(late)
        res[tag] = (f"rho(depth, angle) after epoch 1 {_fmt(e, '')}; at the end {_fmt(lt, '')}",
                    _verdict([e[1] > 0, lt[2] < 0]))
    return _row("C6 layer-wise: angle rises with depth early, falls with depth late (classifiers)",
                "early: increases through the layers; late: decreases (A.5, ResNet-18 blocks)",
                "holds: early rho's interval above 0 and late rho's below 0; partly: one",
                "c6_layers.csv", res), t


def _wasserstein_entries(u: np.ndarray, v: np.ndarray) -> float:
    n = len(u)
    return float(sps.wasserstein_distance(u * math.sqrt(n), v * math.sqrt(n)))


def _c7(ci: ClaimInputs):
    out = []
    for run in ci.runs:
        other = ci.other_seed(run)
        for _, r in ci.epoch_steps(run).iterrows():
            for tag, _ in CENTERINGS:
                v0 = ci.vec(run, 0, "feature", "test", tag)
                out.append({"run": run, "paradigm": r["paradigm"], "epoch": r["epoch"], "step": r["step"],
                            "centering": tag,
                            "w1_to_init": _wasserstein_entries(ci.vec(run, r["step"], "feature", "test", tag), v0),
                            "w1_init_to_other_seed_init": (_wasserstein_entries(
                                v0, ci.vec(other, 0, "feature", "test", tag)) if other else math.nan)})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        drift = []
        for run, g in d.groupby("run"):
            last = g[g["step"] == g["step"].max()].iloc[0]
            drift.append(last["w1_to_init"] - last["w1_init_to_other_seed_init"])
        dr = t_interval(drift)
        res[tag] = (f"W1(final, init) - W1(init, other seed's init), entries x sqrt(n): {_fmt(dr, '')}",
                    _verdict([dr[1] > 0]))
    return _row("C7 the distribution of P-vector entries drifts during training",
                "the value distribution drifts (A.6)",
                "holds: the drift from init exceeds the seed-to-seed difference at init (interval above 0)",
                "c7_entry_distribution.csv", res), t


def _c8(ci: ClaimInputs):
    out = []
    for tag, _ in CENTERINGS:
        for seed, a, b in ci.same_seed_pairs():
            va, vb = (ci.vectors[f"{r}|s{ci.final[r]}|feature|test|{tag}"] for r in (a, b))
            for k in range(min(len(va), len(vb), TOP_K)):
                out.append({"centering": tag, "seed": seed, "model_a": a, "model_b": b, "k": k + 1,
                            "angle": angle(va[k], vb[k])})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag].groupby(["seed", "k"])["angle"].mean().unstack()
        cis = {k: t_interval(d[k]) for k in d.columns}
        higher = [k for k in cis if k > 1]
        res[tag] = ("; ".join(f"k={k}: {_fmt(c)}" for k, c in cis.items()),
                    _verdict([all(cis[k][1] > SMALL for k in higher),
                              all(cis[k][1] > cis[1][2] for k in higher)]) if higher else "not measured")
    return _row("C8 singular vectors 2..5 do not converge across models",
                "no convergence for the top singular vectors other than the P-vector (A.7)",
                f"holds: every k >= 2 cross-paradigm angle's interval above {SMALL:g}° and above k = 1's; "
                "partly: one", "c8_other_singular_vectors.csv", res), t


def _c9(ci: ClaimInputs):
    c = ci.checkpoints
    d = c[c["paradigm"].isin(CLASSIFIERS) & c["is_epoch_end"] & (c["epoch"] >= 1)]
    out = []
    for _, r in d.iterrows():
        for tag, _ in CENTERINGS:
            out.append({"run": r["run"], "paradigm": r["paradigm"], "epoch": r["epoch"], "step": r["step"],
                        "centering": tag, "test_error": 1 - r["test_acc"], "train_error": 1 - r["train_acc"],
                        "angle_to_data": angle(ci.vec(r["run"], r["step"], "feature", "train", tag),
                                               ci.data("train", tag))})
    t = pd.DataFrame(out)
    res = {}
    for tag, _ in CENTERINGS:
        g = t[t["centering"] == tag]
        rs = []
        for _, h in g.groupby("run"):
            ok = (h["test_error"] > 0) & (h["angle_to_data"] > 0)
            rs.append(sps.pearsonr(np.log(h.loc[ok, "angle_to_data"]), np.log(h.loc[ok, "test_error"]))[0]
                      if ok.sum() > 2 else math.nan)
        r = t_interval(rs)
        last = g.loc[g.groupby("run")["step"].idxmax()]
        tau = sps.kendalltau(last["angle_to_data"], last["test_error"]) if len(last) > 2 else None
        final = (f"; final classifiers (n={len(last)}): Kendall tau {tau[0]:.2f}, p={tau[1]:.2f}" if tau is not None
                 else "")
        verdict = "holds" if r[1] > 0 else ("does not hold (opposite sign)" if r[2] < 0 else "not resolved")
        res[tag] = (f"within-run Pearson r of log angle vs log test error over epochs {_fmt(r, '')}{final}", verdict)
    return _row("C9 model-to-data angle relates to test error on a log-log plot (classifiers)",
                "log-log relation between the angle and performance (A.8)",
                "holds: within-run r's interval above 0 (larger angle, larger error); "
                "does not hold: below 0; else not resolved. Within a run both follow training time.",
                "c9_log_log.csv", res), t


def _c10(ci: ClaimInputs):
    s = ci.spectra
    d = s[(s["layer"] == "feature") & (s["samples"] == "test") & (s["run"] != "data")].copy()
    epochs = ci.checkpoints[ci.checkpoints["is_epoch_end"]][["run", "step", "epoch", "paradigm"]]
    d = d.merge(epochs, on=["run", "step"])
    for k in range(1, TOP_K + 1):
        cols = [f"s{j}" for j in range(1, k + 1) if f"s{j}" in d]
        d[f"explained_top{k}"] = (d[cols] ** 2).sum(axis=1) / d["total_energy"]
        d[f"relative_error_E{k}"] = 1 - d[f"explained_top{k}"]  # E_k / ||X||_F^2
    res = {}
    for tag, _ in CENTERINGS:
        g = d[d["centering"] == tag]
        change = []
        for _, h in g.groupby("run"):
            h = h.sort_values("step")
            change.append(h["explained_top1"].iloc[-1] - h["explained_top1"].iloc[0])
        ch = t_interval(change)
        init = t_interval(g[g["step"] == 0]["explained_top1"])
        direction = "rises" if ch[1] > 0 else ("falls" if ch[2] < 0 else "no resolved change")
        res[tag] = (f"top-1 explained variance at init {_fmt(init, '')}, change to the end {_fmt(ch, '')}",
                    f"measured: {direction}")
    return _row("C10 explained variance of the top-k singular vectors and E_k through training",
                "Tables 2-3, Fig. 22 (A.9): reported through checkpoints; no direction in the available text",
                "descriptive: the direction of the top-1 change, resolved by its interval",
                "c10_explained_variance.csv",
                res), d.drop(columns=[c for c in d.columns if c.startswith("s") and c[1:].isdigit()])


def _stability(ci: ClaimInputs):
    b = ci.bootstrap
    if b.empty:
        return _row("S stability of the model-to-data angle under resampled samples", "not in the paper", "",
                    "stability_bootstrap.csv", {t: ("not run (--bootstrap 0)", "") for t, _ in CENTERINGS}), b
    res, out = {}, []
    for tag, _ in CENTERINGS:
        g = b[b["centering"] == tag]
        full = {run: angle(ci.vec(run, ci.final[run], "feature", "train", tag), ci.data("train", tag))
                for run in ci.runs}
        sd = g.groupby("run")["angle_to_data"].std(ddof=1)
        wide = g.pivot(index="resample", columns="run", values="angle_to_data")[list(full)]
        taus = [sps.kendalltau(wide.loc[i], list(full.values()))[0] for i in wide.index]
        for run in full:
            out.append({"centering": tag, "run": run, "angle_full_samples": full[run],
                        "bootstrap_mean": g[g["run"] == run]["angle_to_data"].mean(), "bootstrap_sd": sd[run]})
        sp = ci.spectra
        sp = sp[(sp["layer"] == "feature") & (sp["samples"] == "train") & (sp["centering"] == tag)]
        sp = sp[sp.apply(lambda r: r["step"] == ci.final.get(r["run"]), axis=1)]
        gap = ((sp["s1"] - sp["s2"]) / sp["s1"]).median()
        res[tag] = (f"relative spectral gap (s1 - s2) / s1 of the final features: median {gap:.3f}; "
                    f"per-model SD of the angle over {len(wide)} resamples: median {sd.median():.2f}°, max "
                    f"{sd.max():.2f}°; Kendall tau of the {len(full)} final models' ranking vs the full-sample "
                    f"ranking: median {np.median(taus):.2f} (2.5-97.5%: {np.quantile(taus, 0.025):.2f} to "
                    f"{np.quantile(taus, 0.975):.2f})", "")
    return _row("S stability of the model-to-data angle under resampled samples (not a paper claim)",
                "not in the paper", "bootstrap over the sample set (rows resampled with replacement)",
                "stability_bootstrap.csv", res), pd.DataFrame(out)

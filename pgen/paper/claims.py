"""The paper's claims, measured from the saved P-vectors and spectra alone.

Two stages. The per-claim tables (``c1_common_subspace.csv`` ...) are computed from
``pvectors.npz`` (float32 vectors, angles by :func:`pgen.pvector.angle` in float64) and the
checkpoint / spectrum tables, so a reader can recompute any of them with numpy. The
verdicts are computed from those tables alone (:func:`judge_claims`), so they can be redone
on a study's committed CSVs (:func:`pgen.paper.claims_from_tables`) and tested on
constructed tables whose verdict is known.

Intervals are 95% Student-t intervals over independent training runs (or over seeds where
a number pairs the runs of one seed); a correlation's interval is taken on Fisher's z
(:func:`correlation_interval`), so it stays inside [-1, 1]. A verdict is "holds" only when
the interval resolves it, with the rule stated in the table.
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pandas as pd
from scipy import stats as sps

from pgen.paper.experiments import CENTERINGS, CLASSIFIERS, TOP_K
from pgen.pvector import angle

__all__ = ["ClaimInputs", "compute_claims", "judge_claims", "t_interval", "correlation_interval", "TABLE_FILES"]

SMALL = 10.0  # degrees: the paper's "small" (under 10 degrees on CIFAR, abstract / A.1)
RISE = 1.0  # degrees: a rise or fall within epoch 1 must exceed this to count
EARLY = 0.25  # the first quarter of epoch 1's iterations: where the paper's angle peaks (A.2, A.4)
STRONG = -0.8  # C2: "quasi-monotonic" fall, a Spearman rho at or below this over epochs


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


_CLIP = 0.995  # |r| = 1 has an infinite Fisher z: one run's r is clipped to this first


def _null_z_variance(m: int) -> float:
    """The exact variance of Fisher's z of a clipped Spearman rho over m points when the two
    variables are unrelated (every ordering equally likely), for small m."""
    base = np.arange(m)
    rhos = [sps.spearmanr(base, p)[0] for p in permutations(range(m))]
    return float(np.var(np.arctanh(np.clip(rhos, -_CLIP, _CLIP))))


def _within_run_variance(points: int, method: str) -> float:
    """The sampling variance of one run's Fisher z over ``points`` points: 1/(m - 3)
    (Pearson), Fieller et al.'s 1.06/(m - 3) (Spearman), and for m <= 6 the exact variance
    under no relation (the formulas need more points)."""
    if points <= 6:
        return _null_z_variance(max(points, 2))
    return (1.06 if method == "spearman" else 1.0) / (points - 3)


def correlation_interval(values, points, method: str = "spearman") -> tuple[float, float, float, int]:
    """(mean, low, high, n) over runs of a per-run correlation: a 95% t-interval of Fisher's
    z = atanh(r) (r clipped to +-0.995), back-transformed, so the interval lies inside
    [-1, 1]; 'mean' is tanh of the mean z (Fisher's average of correlations, which weighs a
    run near +-1 more than the plain mean does). Its standard error is at least one run's
    sampling error (``points``: the points each run's correlation was computed over, see
    :func:`_within_run_variance`), so runs that agree exactly still give an interval of
    positive width (with 2 or more runs)."""
    pairs = [(r, m) for r, m in zip(values, points) if np.isfinite(r)]
    if not pairs:
        return math.nan, math.nan, math.nan, 0
    z = np.arctanh(np.clip([r for r, _ in pairs], -_CLIP, _CLIP))
    k = len(z)
    mean = float(np.tanh(z.mean()))
    if k < 2:
        return mean, math.nan, math.nan, k
    within = float(np.mean([_within_run_variance(int(m), method) for _, m in pairs]))
    se = math.sqrt(max(float(z.var(ddof=1)), within) / k)
    h = float(sps.t.ppf(0.975, k - 1) * se)
    return mean, float(np.tanh(z.mean() - h)), float(np.tanh(z.mean() + h)), k


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


TABLE_FILES = ("c1_common_subspace.csv", "c2_training_dynamics.csv", "c3_first_epoch.csv", "c4_cross_paradigm.csv",
               "c5_model_to_data.csv", "c6_layers.csv", "c7_entry_distribution.csv",
               "c8_other_singular_vectors.csv", "c9_log_log.csv", "c10_explained_variance.csv",
               "stability_bootstrap.csv")


def compute_claims(ci: ClaimInputs) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The claims table (one row per claim, both centerings) and the raw tables per claim."""
    builders = (_c1_table, _c2_table, _c3_table, _c4_table, _c5_table, _c6_table, _c7_table, _c8_table, _c9_table,
                _c10_table, _stability_table)
    tables = {file: build(ci) for file, build in zip(TABLE_FILES, builders)}
    return judge_claims(tables, bootstrap=ci.bootstrap, spectra=ci.spectra, final=ci.final), tables


def judge_claims(tables: dict[str, pd.DataFrame], *, bootstrap: pd.DataFrame | None = None,
                 spectra: pd.DataFrame | None = None, final: dict | None = None) -> pd.DataFrame:
    """Every claim's measured numbers and verdict from its table alone (``TABLE_FILES``);
    the stability row also reads the sample-set bootstrap, the spectra and each run's final
    step."""
    rows = [judge(tables[file]) for file, judge in zip(TABLE_FILES[:-1], (
        _c1, _c2, _c3, _c4, _c5, _c6, _c7, _c8, _c9, _c10))]
    rows.append(_stability(tables[TABLE_FILES[-1]], bootstrap if bootstrap is not None else pd.DataFrame(),
                           spectra, final or {}))
    return pd.DataFrame(rows)


def _row(claim, paper, rule, file, per_centering: dict) -> dict:
    row = {"claim": claim, "paper": paper, "rule": rule, "file": file}
    for tag, _ in CENTERINGS:
        measured, verdict = per_centering[tag]
        row[f"{tag}_measured"] = measured
        row[f"{tag}_verdict"] = verdict
    return row


def _points(g: pd.DataFrame) -> int:
    return int(len(g))


# ---------------------------------------------------------------------------- C1


def _c1_table(ci: ClaimInputs) -> pd.DataFrame:
    out = []
    for tag, _ in CENTERINGS:
        for seed, a, b in ci.same_seed_pairs():
            out.append({"centering": tag, "seed": seed, "model_a": a, "model_b": b,
                        "angle_trained": angle(ci.vec(a, ci.final[a], "feature", "test", tag),
                                               ci.vec(b, ci.final[b], "feature", "test", tag)),
                        "angle_init": angle(ci.vec(a, 0, "feature", "test", tag), ci.vec(b, 0, "feature", "test", tag))})
    return pd.DataFrame(out)


def _c1(t: pd.DataFrame) -> dict:
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
                "at init; partly: one of the two", "c1_common_subspace.csv", res)


# ---------------------------------------------------------------------------- C2


def _c2_table(ci: ClaimInputs) -> pd.DataFrame:
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
    return pd.DataFrame(out)


def _c2(t: pd.DataFrame) -> dict:
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        init = t_interval(d[d["step"] == 0]["angle_to_own_final"])
        rhos, points = [], []
        for _, g in d.groupby("run"):
            g = g[g["step"] < g["step"].max()]  # the reference (the last epoch) itself is 0 by construction
            rhos.append(_spearman(g["epoch"], g["angle_to_own_final"]))
            points.append(_points(g))
        rho = correlation_interval(rhos, points)
        res[tag] = (f"at init {_fmt(init)}; Spearman rho(epoch, angle) {_fmt(rho, '')}",
                    _verdict([init[1] > 45, rho[2] <= STRONG]))
    return _row("C2 angle to the well-trained model falls during training",
                "70-80° at init, falls quasi-monotonically per epoch to a small angle (abstract, A.1)",
                f"holds: init interval above 45° and the whole interval of rho at or below {STRONG:g} (a "
                "quasi-monotonic fall); partly: one", "c2_training_dynamics.csv", res)


# ---------------------------------------------------------------------------- C3 and C5: the shape of epoch 1


def _rise_fall(steps: np.ndarray, curve: np.ndarray) -> tuple[float, float]:
    """Signed rise and fall of a curve over epoch 1 (steps from 0, the initial weights, to its
    last iteration): the mean over the first quarter of the iterations (``EARLY``) minus the
    value at init, and that mean minus the value at the end. Neither is positive by
    construction: a curve that only falls has a negative rise."""
    order = np.argsort(steps)
    steps, curve = np.asarray(steps)[order], np.asarray(curve, dtype=float)[order]
    if len(curve) < 3:
        return math.nan, math.nan
    last = steps[-1]
    early = curve[(steps > 0) & (steps <= max(1, round(EARLY * last)))]
    if len(early) == 0:
        return math.nan, math.nan
    return float(early.mean() - curve[0]), float(early.mean() - curve[-1])


def _c3_table(ci: ClaimInputs) -> pd.DataFrame:
    out = []
    for run in ci.runs:
        for _, r in ci.epoch1_steps(run).iterrows():
            for tag, _ in CENTERINGS:
                out.append({"run": run, "paradigm": r["paradigm"], "iteration": r["step"], "centering": tag,
                            "angle_to_own_final": angle(ci.vec(run, r["step"], "feature", "test", tag),
                                                        ci.vec(run, ci.final[run], "feature", "test", tag))})
    return pd.DataFrame(out)


def _c3(t: pd.DataFrame) -> dict:
    res = {}
    for tag, _ in CENTERINGS:
        rf = [_rise_fall(g["iteration"].to_numpy(), g["angle_to_own_final"].to_numpy())
              for _, g in t[t["centering"] == tag].groupby("run")]
        rise, fall = t_interval([a for a, _ in rf]), t_interval([b for _, b in rf])
        res[tag] = (f"rise (first quarter of epoch 1 minus init) {_fmt(rise)}; fall (first quarter minus the end of "
                    f"epoch 1) {_fmt(fall)}", _shape_verdict(rise, fall))
    return _row("C3 within epoch 1 the angle first rises, then falls", "non-monotonic in the first epoch (A.2)",
                "signed: rise = mean angle over the first quarter of epoch 1's iterations minus the angle at init, "
                f"fall = that mean minus the angle at the end of epoch 1; holds: both intervals above {RISE:g}°; "
                "partly: the rise alone (a fall without the rise is the ordinary convergence of C2, not this "
                "claim's non-monotonic shape); else does not hold", "c3_first_epoch.csv", res)


def _shape_verdict(rise, fall) -> str:
    """Rise-then-fall: the rise is the claim's point, the fall completes it."""
    if not rise[1] > RISE:
        return "does not hold"
    return "holds" if fall[1] > RISE else "partly"


# ---------------------------------------------------------------------------- C4


def _c4_table(ci: ClaimInputs) -> pd.DataFrame:
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
    return pd.DataFrame(out)


def _c4(t: pd.DataFrame) -> dict:
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
                "holds: every pair's decrease resolved above 0; partly: some", "c4_cross_paradigm.csv", res)


# ---------------------------------------------------------------------------- C5


def _c5_table(ci: ClaimInputs) -> pd.DataFrame:
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
    return pd.DataFrame(out)


def _c5(t: pd.DataFrame) -> dict:
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        rf, rhos, points, change = [], [], [], []
        for _, g in d.groupby("run"):
            first = g[g["in_epoch1"]]
            rf.append(_rise_fall(first["step"].to_numpy(), first["angle_to_data"].to_numpy()))
            e = g[g["is_epoch_end"] & (g["epoch"] >= 1)].sort_values("epoch")
            rhos.append(_spearman(e["epoch"], e["angle_to_data"]))
            points.append(_points(e))
            change.append(e["angle_to_data"].iloc[-1] - e["angle_to_data"].iloc[0] if len(e) > 1 else math.nan)
        rise, fall = t_interval([a for a, _ in rf]), t_interval([b for _, b in rf])
        rho, ch = correlation_interval(rhos, points), t_interval(change)
        later_falls = rho[2] < 0 and ch[2] < 0
        res[tag] = (f"epoch-1 rise {_fmt(rise)}, fall {_fmt(fall)}; after epoch 1 Spearman rho(epoch, angle) "
                    f"{_fmt(rho, '')}, change from epoch 1 to the end {_fmt(ch)}",
                    _verdict([_shape_verdict(rise, fall) == "holds", later_falls]))
    return _row("C5 model-to-data angle (training samples): non-monotonic in epoch 1, then decreasing",
                "rises then falls in epoch 1, then decreases (A.4; trained with random augmentation)",
                f"epoch 1: signed rise and fall as C3, both intervals above {RISE:g}°; after epoch 1: the intervals "
                "of rho and of the signed change from epoch 1 to the end both below 0; holds: both parts; partly: "
                "one", "c5_model_to_data.csv", res)


# ---------------------------------------------------------------------------- C6


def _c6_table(ci: ClaimInputs) -> pd.DataFrame:
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
    return pd.DataFrame(out)


def _c6(t: pd.DataFrame) -> dict:
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        early, late, points = [], [], []
        for _, g in d.groupby("run"):
            for which, target in ((1, early), (g["epoch"].max(), late)):
                h = g[g["epoch"] == which]
                target.append(_spearman(h["depth"], h["angle_to_data"]))
            points.append(int(g["depth"].nunique()))
        e, lt = correlation_interval(early, points), correlation_interval(late, points)
        res[tag] = (f"rho(depth, angle) after epoch 1 {_fmt(e, '')}; at the end {_fmt(lt, '')} "
                    f"({max(points) if points else 0} depths per run)", _verdict([e[1] > 0, lt[2] < 0]))
    return _row("C6 layer-wise: angle rises with depth early, falls with depth late (classifiers)",
                "early: increases through the layers; late: decreases (A.5, ResNet-18 blocks)",
                "holds: early rho's interval above 0 and late rho's below 0; partly: one (Fisher-z intervals whose "
                "width is at least one run's sampling error over its few depths)", "c6_layers.csv", res)


# ---------------------------------------------------------------------------- C7


def _wasserstein_entries(u: np.ndarray, v: np.ndarray) -> float:
    n = len(u)
    return float(sps.wasserstein_distance(u * math.sqrt(n), v * math.sqrt(n)))


def _c7_table(ci: ClaimInputs) -> pd.DataFrame:
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
    return pd.DataFrame(out)


def _c7(t: pd.DataFrame) -> dict:
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag]
        drift = []
        for _, g in d.groupby("run"):
            last = g[g["step"] == g["step"].max()].iloc[0]
            drift.append(last["w1_to_init"] - last["w1_init_to_other_seed_init"])
        dr = t_interval(drift)
        res[tag] = (f"W1(final, init) - W1(init, other seed's init), entries x sqrt(n): {_fmt(dr, '')}",
                    _verdict([dr[1] > 0]))
    return _row("C7 the distribution of P-vector entries drifts during training",
                "the value distribution drifts (A.6)",
                "holds: the drift from init exceeds the seed-to-seed difference at init (interval above 0)",
                "c7_entry_distribution.csv", res)


# ---------------------------------------------------------------------------- C8


def _c8_table(ci: ClaimInputs) -> pd.DataFrame:
    out = []
    for tag, _ in CENTERINGS:
        for seed, a, b in ci.same_seed_pairs():
            va, vb = (ci.vectors[f"{r}|s{ci.final[r]}|feature|test|{tag}"] for r in (a, b))
            for k in range(min(len(va), len(vb), TOP_K)):
                out.append({"centering": tag, "seed": seed, "model_a": a, "model_b": b, "k": k + 1,
                            "angle": angle(va[k], vb[k])})
    return pd.DataFrame(out)


def _c8(t: pd.DataFrame) -> dict:
    res = {}
    for tag, _ in CENTERINGS:
        d = t[t["centering"] == tag].groupby(["seed", "k"])["angle"].mean().unstack()
        cis = {int(k): t_interval(d[k]) for k in d.columns}
        higher = [k for k in cis if k > 1]
        measured = "; ".join(f"k={k}: {_fmt(c)}" for k, c in cis.items())
        if not higher or 1 not in cis:
            verdict = "not measured"
        elif not cis[1][2] < SMALL:
            # the claim contrasts the P-vector, which converges, with the later vectors, which do not
            verdict, measured = "does not hold", measured + f" (k = 1 itself is not below {SMALL:g}°: no contrast)"
        else:
            verdict = _verdict([all(cis[k][1] > SMALL for k in higher), all(cis[k][1] > cis[1][2] for k in higher)])
        res[tag] = (measured, verdict)
    return _row("C8 singular vectors 2..5 do not converge across models",
                "no convergence for the top singular vectors other than the P-vector (A.7)",
                f"the claim needs k = 1 to converge (its interval below {SMALL:g}°), else it does not hold; then "
                f"holds: every k >= 2 cross-paradigm angle's interval above {SMALL:g}° and above k = 1's; partly: "
                "one", "c8_other_singular_vectors.csv", res)


# ---------------------------------------------------------------------------- C9


def _c9_table(ci: ClaimInputs) -> pd.DataFrame:
    c = ci.checkpoints
    d = c[c["paradigm"].isin(CLASSIFIERS) & c["is_epoch_end"] & (c["epoch"] >= 1)]
    out = []
    for _, r in d.iterrows():
        for tag, _ in CENTERINGS:
            out.append({"run": r["run"], "paradigm": r["paradigm"], "epoch": r["epoch"], "step": r["step"],
                        "centering": tag, "test_error": 1 - r["test_acc"], "train_error": 1 - r["train_acc"],
                        "angle_to_data": angle(ci.vec(r["run"], r["step"], "feature", "train", tag),
                                               ci.data("train", tag))})
    return pd.DataFrame(out)


def _c9(t: pd.DataFrame) -> dict:
    res = {}
    for tag, _ in CENTERINGS:
        g = t[t["centering"] == tag]
        rs, points = [], []
        for _, h in g.groupby("run"):
            ok = (h["test_error"] > 0) & (h["angle_to_data"] > 0)
            rs.append(sps.pearsonr(np.log(h.loc[ok, "angle_to_data"]), np.log(h.loc[ok, "test_error"]))[0]
                      if ok.sum() > 2 else math.nan)
            points.append(int(ok.sum()))
        r = correlation_interval(rs, points, "pearson")
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
                "c9_log_log.csv", res)


# ---------------------------------------------------------------------------- C10


def _c10_table(ci: ClaimInputs) -> pd.DataFrame:
    s = ci.spectra
    d = s[(s["layer"] == "feature") & (s["samples"] == "test") & (s["run"] != "data")].copy()
    epochs = ci.checkpoints[ci.checkpoints["is_epoch_end"]][["run", "step", "epoch", "paradigm"]]
    d = d.merge(epochs, on=["run", "step"])
    for k in range(1, TOP_K + 1):
        cols = [f"s{j}" for j in range(1, k + 1) if f"s{j}" in d]
        d[f"explained_top{k}"] = (d[cols] ** 2).sum(axis=1) / d["total_energy"]
        d[f"relative_error_E{k}"] = 1 - d[f"explained_top{k}"]  # E_k / ||X||_F^2
    return d.drop(columns=[c for c in d.columns if c.startswith("s") and c[1:].isdigit()])


def _c10(d: pd.DataFrame) -> dict:
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
                "c10_explained_variance.csv", res)


# ---------------------------------------------------------------------------- S: stability (not a paper claim)


def _stability_table(ci: ClaimInputs) -> pd.DataFrame:
    b = ci.bootstrap
    if b.empty:
        return pd.DataFrame(columns=["centering", "run", "angle_full_samples", "bootstrap_mean", "bootstrap_sd"])
    out = []
    for tag, _ in CENTERINGS:
        g = b[b["centering"] == tag]
        for run in ci.runs:
            full = angle(ci.vec(run, ci.final[run], "feature", "train", tag), ci.data("train", tag))
            values = g[g["run"] == run]["angle_to_data"]
            out.append({"centering": tag, "run": run, "angle_full_samples": full, "bootstrap_mean": values.mean(),
                        "bootstrap_sd": values.std(ddof=1)})
    return pd.DataFrame(out)


def _stability(t: pd.DataFrame, b: pd.DataFrame, spectra: pd.DataFrame | None, final: dict) -> dict:
    if b.empty or t.empty:
        return _row("S stability of the model-to-data angle under resampled samples", "not in the paper", "",
                    "stability_bootstrap.csv", {tag: ("not run (--bootstrap 0)", "") for tag, _ in CENTERINGS})
    res = {}
    for tag, _ in CENTERINGS:
        g = b[b["centering"] == tag]
        full = t[t["centering"] == tag].set_index("run")["angle_full_samples"]
        sd = t[t["centering"] == tag].set_index("run")["bootstrap_sd"]
        wide = g.pivot(index="resample", columns="run", values="angle_to_data")[list(full.index)]
        taus = [sps.kendalltau(wide.loc[i], full.to_numpy())[0] for i in wide.index]
        text = ""
        if spectra is not None and len(spectra):
            sp = spectra[(spectra["layer"] == "feature") & (spectra["samples"] == "train")
                         & (spectra["centering"] == tag)]
            sp = sp[sp.apply(lambda r: r["step"] == final.get(r["run"]), axis=1)]
            text = f"relative spectral gap (s1 - s2) / s1 of the final features: median {((sp['s1'] - sp['s2']) / sp['s1']).median():.3f}; "
        res[tag] = (text + f"per-model SD of the angle over {len(wide)} resamples: median {sd.median():.2f}°, max "
                    f"{sd.max():.2f}°; Kendall tau of the {len(full)} final models' ranking vs the full-sample "
                    f"ranking: median {np.median(taus):.2f} (2.5-97.5%: {np.quantile(taus, 0.025):.2f} to "
                    f"{np.quantile(taus, 0.975):.2f})", "")
    return _row("S stability of the model-to-data angle under resampled samples (not a paper claim)",
                "not in the paper", "bootstrap over the sample set (rows resampled with replacement)",
                "stability_bootstrap.csv", res)

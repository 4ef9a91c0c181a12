"""Statistics against scipy / statsmodels, and the PGDL CMI against the competition's published values."""

import itertools
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.api as sm

from pgen.stats import (StatsError, conditional_mutual_information, correlations, granulated_kendall,
                        kendall_tau, loglog_fit)

KIT_TOY = Path(__file__).parent / "fixtures" / "pgdl" / "kit_toy"


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.random(40)
    y = x + 0.3 * rng.random(40)
    c = correlations(x, y, n_boot=200).set_index("method")
    for m, fn in (("pearson", scipy.stats.pearsonr), ("spearman", scipy.stats.spearmanr), ("kendall", scipy.stats.kendalltau)):
        ref = fn(x, y)
        assert c.loc[m, "value"] == pytest.approx(ref[0], rel=1e-12)
        assert c.loc[m, "p_value"] == pytest.approx(ref[1], rel=1e-9)
        assert c.loc[m, "ci_low"] <= c.loc[m, "value"] <= c.loc[m, "ci_high"]


def test_loglog_fit_matches_statsmodels_hc3():
    rng = np.random.default_rng(1)
    x = rng.uniform(1, 80, 30)
    y = 2.0 * x**-0.4 * np.exp(0.05 * rng.standard_normal(30))
    fit = loglog_fit(x, y)
    ref = sm.OLS(np.log(y), sm.add_constant(np.log(x))).fit(cov_type="HC3")
    assert fit.slope == pytest.approx(ref.params[1])
    assert fit.intercept == pytest.approx(ref.params[0])
    assert fit.r2 == pytest.approx(ref.rsquared)
    np.testing.assert_allclose(fit.slope_ci, ref.conf_int()[1])
    assert fit.slope == pytest.approx(-0.4, abs=0.05)


def test_kendall_and_granulated_kendall_by_hand():
    # 2 x 2 grid: models a..d; hparams p in {0,1}, q in {0,1}
    hp = {"a": {"p": 0, "q": 0}, "b": {"p": 1, "q": 0}, "c": {"p": 0, "q": 1}, "d": {"p": 1, "q": 1}}
    score = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 3.0}
    gap = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    res = granulated_kendall(score, hp, gap)
    # psi_p: groups q=0 {a,b}: concordant (+1); q=1 {c,d}: discordant (-1) -> 0
    # psi_q: groups p=0 {a,c}: +1; p=1 {b,d}: +1 -> 1
    assert res["per_hparam"] == {"p": 0.0, "q": 1.0}
    assert res["psi"] == 0.5
    assert kendall_tau(list(score.values()), list(gap.values())) == pytest.approx(scipy.stats.kendalltau([1, 2, 4, 3], [1, 2, 3, 4])[0])


@pytest.mark.parametrize("x, y, msg", [
    ([1, 2], [1, 2], "at least 3"),
    ([1, 1, 1, 1], [1, 2, 3, 4], "constant"),
    ([1, 2, 3], [1, 2, 3, 4], "same length"),
])
def test_stats_errors(x, y, msg):
    with pytest.raises(StatsError, match=msg):
        correlations(x, y)


def test_loglog_needs_positive_values():
    with pytest.raises(StatsError, match="positive"):
        loglog_fit([1, 2, 3, 4], [0.1, -0.2, 0.3, 0.4])


def hdf5_arrays(path):
    out = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.append(np.array(obj, dtype=np.float64)) if isinstance(obj, h5py.Dataset) else None)
    return out


def kit_scores():
    ssw, dist = {}, {}
    for d in sorted(p for p in KIT_TOY.iterdir() if p.is_dir() and p.name.startswith("model_")):
        w, w0 = hdf5_arrays(d / "weights.hdf5"), hdf5_arrays(d / "weights_init.hdf5")
        ssw[d.name] = sum(float(np.sum(a**2)) for a in w)
        dist[d.name] = sum(float(np.sum((a - b) ** 2)) for a, b in zip(w, w0))
    return ssw, dist


def test_cmi_reproduces_the_competition_values():
    configs = json.loads((KIT_TOY / "model_configs.json").read_text())
    ssw, dist = kit_scores()
    assert conditional_mutual_information(ssw, configs) == pytest.approx(0.10070132390915873, abs=1e-9)
    assert conditional_mutual_information(dist, configs) == pytest.approx(0.11900511812160217, abs=1e-9)


def test_cmi_properties():
    configs = json.loads((KIT_TOY / "model_configs.json").read_text())
    ssw, _ = kit_scores()
    base, table = conditional_mutual_information(ssw, configs, details=True)
    # invariant to flipping the measure's sign; ordered pairs of 3 hparams -> 6 rows
    assert conditional_mutual_information({k: -v for k, v in ssw.items()}, configs) == pytest.approx(base, abs=1e-12)
    assert len(table) == 6 and table["score"].min() == base
    # ids with or without the model_ prefix
    assert conditional_mutual_information({k.replace("model_", ""): v for k, v in ssw.items()}, configs) == base
    # a perfect predictor of the gap scores 1
    gaps = {f"model_{k}" if not k.startswith("model_") else k: c["metrics"]["train_acc"] - c["metrics"]["test_acc"]
            for k, c in configs.items()}
    assert conditional_mutual_information(gaps, configs) == pytest.approx(1.0, abs=1e-6)
    assert 0 <= base <= 1


def test_cmi_incomplete_grid_is_an_error():
    configs = json.loads((KIT_TOY / "model_configs.json").read_text())
    ssw, _ = kit_scores()
    del configs[next(iter(configs))]
    with pytest.raises(StatsError, match="incomplete hparam grid"):
        conditional_mutual_information(ssw, configs)


def _official_cmi(scores, configs):
    """The competition scorer's algorithm, transcribed loop by loop from its description
    (notes.md, "Official score"): an independent reference for pgen's vectorized CMI."""
    import itertools
    import math as m

    ids = sorted(configs)
    hps = sorted(configs[ids[0]]["hparams"])
    best = m.inf
    for h1, h2 in itertools.permutations(hps, 2):
        p1 = configs[ids[0]]["hparams"][h1]["possible_values"]
        p2 = configs[ids[0]]["hparams"][h2]["possible_values"]
        keys = list(dict.fromkeys(str(a) + str(b) + str(c) + str(d) for a, b, c, d in itertools.product(p1, p1, p2, p2)))
        tables = {k: [[0, 0], [0, 0]] for k in keys}
        for a in ids:
            for b in ids:
                ca, cb = configs[a], configs[b]
                key = (str(ca["hparams"][h1]["current_value"]) + str(cb["hparams"][h1]["current_value"])
                       + str(ca["hparams"][h2]["current_value"]) + str(cb["hparams"][h2]["current_value"]))
                if key not in tables:
                    continue
                ga = ca["metrics"]["train_acc"] - ca["metrics"]["test_acc"]
                gb = cb["metrics"]["train_acc"] - cb["metrics"]["test_acc"]
                tables[key][0 if ga > gb else 1][0 if scores[a] > scores[b] else 1] += 1
        mis, ents = [], []
        for t in tables.values():
            total = sum(map(sum, t))
            if total == 0:
                mis.append(0.0)
                ents.append(0.0)
                continue
            p = [[v / total for v in row] for row in t]
            rows = [sum(r) for r in p]
            cols = [p[0][j] + p[1][j] for j in range(2)]
            mis.append(sum(p[i][j] * m.log2(p[i][j] / (rows[i] * cols[j])) for i in range(2) for j in range(2) if p[i][j] > 0))
            ents.append(-sum(r * m.log2(r + 1e-12) for r in rows))
        mean_ent = sum(ents) / len(ents)
        best = min(best, (sum(mis) / len(mis)) / mean_ent if mean_ent > 0 else 0.0)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_cmi_equals_the_official_algorithm_and_the_table_form(seed):
    """Random full grids, with ties, mixed value types and string keys that collide
    ("1" + "11" == "11" + "1"), against the loop transcription; cmi_from_table gives the same."""
    import itertools

    import pandas as pd

    from pgen.stats import cmi_from_table

    rng = np.random.default_rng(seed)
    grid = {"a": [1, 11], "b": ["x", "y", "z"], "c": [0.5, 1.0]} if seed % 2 else {"a": [0, 1], "b": [16, 64]}
    configs, rows = {}, []
    for i, values in enumerate(itertools.product(*grid.values())):
        hp = dict(zip(grid, values))
        train, test = float(rng.choice([0.9, 1.0, rng.random()])), float(rng.random())
        configs[f"model_{i}"] = {"hparams": {h: {"possible_values": grid[h], "current_value": v} for h, v in hp.items()},
                                 "metrics": {"train_acc": train, "test_acc": test}}
        rows.append({"model_id": f"model_{i}", **{f"hp.{h}": v for h, v in hp.items()}, "gap": train - test})
    scores = {k: float(rng.integers(0, 4)) for k in configs}  # ties on purpose
    ref = _official_cmi(scores, configs)
    assert conditional_mutual_information(scores, configs) == pytest.approx(ref, abs=1e-12)
    table = pd.DataFrame(rows).assign(m=[scores[r["model_id"]] for r in rows])
    assert cmi_from_table(table, "m", grid) == pytest.approx(ref, abs=1e-12)


def test_measure_statistics_is_what_report_and_benchmark_use():
    import pandas as pd

    from pgen.stats import kendall_null_sd, measure_statistics

    rng = np.random.default_rng(0)
    t = pd.DataFrame({"model_id": [str(i) for i in range(30)], "m": rng.random(30)})
    t["test_acc"] = 0.9 - 0.3 * t["m"] + 0.1 * rng.random(30)
    t["gap"] = 0.2 * t["m"] + 0.05 * rng.random(30)
    st = measure_statistics(t, "m", n_boot=200)
    assert st.kendall["test_acc"] == pytest.approx(scipy.stats.kendalltau(t["m"], t["test_acc"])[0], abs=1e-12)
    row = st.kendall_row("gap")
    assert row["ci_low"] < row["value"] < row["ci_high"] and st.n == 30
    assert st.kendall_null_sd == pytest.approx(kendall_null_sd(30))
    # the null sd is the spread of tau between random rankings
    taus = [scipy.stats.kendalltau(rng.permutation(30), np.arange(30))[0] for _ in range(2000)]
    assert np.std(taus) == pytest.approx(st.kendall_null_sd, rel=0.1)
    with pytest.raises(StatsError, match="no column"):
        measure_statistics(t, "absent")


def test_statistics_of_a_sign_minus_one_measure_are_of_sign_x_value():
    # One convention in every report: correlations, tau and Psi of sign x value; fits of the values.
    import pandas as pd

    from pgen.stats import measure_statistics

    rng = np.random.default_rng(1)
    t = pd.DataFrame({"model_id": [str(i) for i in range(24)], "m": 1 + rng.random(24),
                      "hp.a": np.repeat([0, 1, 2], 8), "hp.b": np.tile([0, 1], 12)})
    t["test_acc"] = 0.5 + 0.2 * t["m"] + 0.05 * rng.random(24)  # larger m, better: a sign -1 measure
    t["gap"] = 0.3 - 0.1 * t["m"] + 0.02 * rng.random(24)
    raw = measure_statistics(t, "m", n_boot=200)
    oriented = measure_statistics(t, "m", n_boot=200, sign=-1)
    for target in ("test_acc", "gap"):
        assert oriented.kendall[target] == pytest.approx(scipy.stats.kendalltau(-t["m"], t[target])[0], abs=1e-12)
        r, o = raw.kendall_row(target), oriented.kendall_row(target)
        assert (o["ci_low"], o["ci_high"]) == pytest.approx((-r["ci_high"], -r["ci_low"]), abs=1e-12)
    assert oriented.kendall["gap"] > 0 > oriented.kendall["test_acc"]  # the intended direction reads positive
    assert oriented.psi["psi"] == pytest.approx(-raw.psi["psi"], abs=1e-12)
    assert [f.slope for f in oriented.fits] == pytest.approx([f.slope for f in raw.fits])
    with pytest.raises(StatsError, match="sign"):
        measure_statistics(t, "m", sign=0)


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_vectorized_bootstrap_equals_the_loop_over_scipy(method):
    """correlations() computes its CIs in one vectorized pass; the generic loop over scipy
    with the same resamples is the reference (ties and constant resamples included)."""
    from pgen.stats import bootstrap_ci, correlations
    from pgen.stats.correlation import _METHODS

    rng = np.random.default_rng(3)
    x = rng.random(12)
    x[:4] = x[0]  # ties, and some resamples with a constant column
    y = x + 0.5 * rng.random(12)
    fn = lambda a, b: float(_METHODS[method](a, b)[0])  # noqa: E731
    ref = bootstrap_ci(x, y, fn, n_boot=400, seed=7)
    row = correlations(x, y, methods=(method,), n_boot=400, seed=7).iloc[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(ref, abs=1e-12)
    assert row["unit"] == "models" and row["units"] == 12
    # resampling cells (pairs of models, one of size 1): the same agreement, on whole cells
    cells = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6]
    ref = bootstrap_ci(x, y, fn, n_boot=400, seed=7, groups=cells)
    row = correlations(x, y, methods=(method,), n_boot=400, seed=7, groups=cells).iloc[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(ref, abs=1e-12)
    assert row["unit"] == "cells" and row["units"] == 7


# --------------------------------------------------------------------- Jiang et al.'s statistics

def test_jiang_tau_is_tau_a_and_differs_from_tau_b_with_ties():
    import itertools

    import scipy.stats

    from pgen.stats import jiang_tau

    x = [1, 2, 2, 3, 3, 3, 4]
    y = [1, 1, 2, 2, 3, 4, 4]
    pairs = list(itertools.permutations(range(7), 2))
    brute = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs) / len(pairs)
    assert jiang_tau(x, y) == pytest.approx(brute, abs=1e-15)
    assert jiang_tau(x, y) != pytest.approx(scipy.stats.kendalltau(x, y)[0], abs=0.01)
    assert jiang_tau([1, 1, 1], [1, 2, 3]) == 0.0


def test_granulated_psi_counts_a_constant_group_as_zero():
    from pgen.stats import granulated_kendall

    # hparam a varies inside each group of b; in group b=0 the score is constant
    hps = {f"m{i}": {"a": i % 2, "b": i // 2} for i in range(4)}
    scores = {"m0": 5.0, "m1": 5.0, "m2": 1.0, "m3": 2.0}
    gap = {"m0": 0.1, "m1": 0.2, "m2": 0.1, "m3": 0.3}
    psi = granulated_kendall(scores, hps, gap)
    # psi_a: groups b=0 (constant score: 0) and b=1 (agree: tau-a over 2 ordered pairs = 1) -> 0.5
    assert psi["per_hparam"]["a"] == pytest.approx(0.5)
    # psi_b: groups a=0 (m0, m2: score down, gap equal -> 0) and a=1 (m1, m3: 5 > 2 while 0.2 < 0.3 -> -1)
    assert psi["per_hparam"]["b"] == pytest.approx(-0.5)
    assert psi["psi"] == pytest.approx(0.0)


def brute_k_mu(s, g, values):
    """Jiang et al.'s K(mu) by counting, pair by pair, with dictionaries."""
    import itertools
    from collections import Counter

    n, names = len(s), sorted(values)
    best = math.inf
    for S in [()] + [(h,) for h in names] + list(itertools.combinations(names, 2)):
        counts = Counter()
        for i, j in itertools.permutations(range(n), 2):
            u = tuple((values[h][i], values[h][j]) for h in S)
            counts[(u, g[i] > g[j], s[i] > s[j])] += 1
        total = sum(counts.values())
        us = {k[0] for k in counts}
        mi = ent = 0.0
        for u in us:
            nu = sum(v for k, v in counts.items() if k[0] == u)
            pg = {a: sum(v for k, v in counts.items() if k[0] == u and k[1] == a) / nu for a in (False, True)}
            ps = {b: sum(v for k, v in counts.items() if k[0] == u and k[2] == b) / nu for b in (False, True)}
            for a in (False, True):
                if pg[a] > 0:
                    ent -= nu / total * pg[a] * math.log2(pg[a])
                for b in (False, True):
                    p = counts[(u, a, b)] / nu
                    if p > 0:
                        mi += nu / total * p * math.log2(p / (pg[a] * ps[b]))
        best = min(best, mi / ent if ent > 0 else 0.0)
    return best


def test_jiang_k_mu_against_counting_and_below_the_pgdl_cmi():
    from pgen.stats import cmi_from_table, jiang_cmi

    rng = np.random.default_rng(3)
    grid = {"a": [0, 1, 2], "b": [0, 1], "c": ["x", "y"]}
    rows = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    table = pd.DataFrame({f"hp.{h}": [r[h] for r in rows] for h in grid})
    table["gap"] = rng.normal(size=len(rows)) + 0.3 * table["hp.a"]
    table["m"] = table["gap"] + rng.normal(size=len(rows))
    values = {h: list(table[f"hp.{h}"]) for h in grid}
    k = jiang_cmi(table["m"], table["gap"], values)
    assert k == pytest.approx(brute_k_mu(list(table["m"]), list(table["gap"]), values), abs=1e-12)
    assert k <= cmi_from_table(table, "m", grid) + 1e-12
    _, details = jiang_cmi(table["m"], table["gap"], values, details=True)
    assert list(details["conditioning"])[:4] == ["(none)", "a", "b", "c"] and len(details) == 1 + 3 + 3


# --------------------------------------------------------------------- the design's resampling unit

def _clustered_zoo(rng, cells, seeds, rho, noise):
    """Cells with latent (u, v) of correlation rho; each seed adds small noise, so seeds of a
    cell are strongly correlated. Kendall's tau of a random pair of models from different
    cells: (2 / pi) asin(rho / (1 + noise^2))."""
    u = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=cells)
    x = np.repeat(u[:, 0], seeds) + noise * rng.standard_normal(cells * seeds)
    y = np.repeat(u[:, 1], seeds) + noise * rng.standard_normal(cells * seeds)
    return x, y, np.repeat(np.arange(cells), seeds)


def test_resampling_cells_covers_the_true_tau_where_resampling_models_does_not():
    """400 synthetic zoos of 24 cells x 2 seeds with strongly correlated seeds: the 95% CI
    over cells covers the true tau in >= 93% of them; over models (seeds taken as
    independent) it under-covers (0.84 here: the CIs are too narrow)."""
    rng = np.random.default_rng(0)
    rho, noise = 0.3, 0.2
    true = 2 / math.pi * math.asin(rho / (1 + noise**2))
    covered = {"cells": 0, "models": 0}
    for d in range(400):
        x, y, cells = _clustered_zoo(rng, 24, 2, rho, noise)
        for unit, groups in (("cells", cells), ("models", None)):
            row = correlations(x, y, methods=("kendall",), n_boot=1000, seed=d, groups=groups).iloc[0]
            assert row["unit"] == unit
            covered[unit] += row["ci_low"] <= true <= row["ci_high"]
    assert covered["cells"] / 400 >= 0.93
    assert covered["models"] / 400 <= 0.90


def test_resampling_unit_follows_the_design():
    from pgen.stats import resampling_unit

    t = pd.DataFrame({"hp.lr": [0.1, 0.1, 0.01, 0.01, 0.5], "hp.seed": [0, 1, 0, 1, 0], "m": range(5)})
    unit = resampling_unit(t)
    assert unit.kind == "cells" and unit.count == 3 and list(unit.groups) == [0, 0, 1, 1, 2]
    assert unit.describe() == "3 hyperparameter cells (1-2 models each)"
    w = unit.weights(np.array([[0, 0, 2], [1, 2, 2]]))
    assert w.tolist() == [[2, 2, 0, 0, 1], [0, 0, 1, 1, 2]]
    assert sorted(unit.indices(np.array([1, 2, 2]))) == [2, 3, 4, 4]
    # the vectorized rows of a resample: each drawn cell's members, in draw order
    rng = np.random.default_rng(0)
    big = resampling_unit(pd.DataFrame({"hp.lr": rng.integers(0, 30, 200), "hp.seed": range(200)}))
    members = [np.flatnonzero(big.groups == c) for c in range(big.count)]
    for _ in range(20):
        draw = rng.integers(0, big.count, big.count)
        assert unit.indices(np.empty(0, dtype=int)).size == 0
        assert big.indices(draw).tolist() == np.concatenate([members[c] for c in draw]).tolist()
    assert resampling_unit(t[t["hp.seed"] == 0]).kind == "models"  # one model per cell
    assert resampling_unit(t.assign(**{"hp.lr": 0.1})).kind == "models"  # a single cell: its seeds are the units
    assert resampling_unit(pd.DataFrame({"m": range(4)})).describe() == "4 models"
    assert unit.subset(np.array([True, False, True, False, True])).kind == "models"


def test_paired_difference_resamples_cells_together():
    from pgen.stats import paired_tau_difference

    rng = np.random.default_rng(2)
    x, gap, cells = _clustered_zoo(rng, 20, 2, 0.6, 0.1)
    b = rng.standard_normal(40)
    d = paired_tau_difference(x, b, gap, n_boot=300, seed=4, groups=cells)
    assert d["unit"] == "cells" and d["units"] == 20
    # the reference: the same cell draws, both seeds of a cell together, scipy's tau on the rows
    r = np.random.default_rng(4)
    diffs = []
    for _ in range(300):
        idx = np.concatenate([[2 * c, 2 * c + 1] for c in r.integers(0, 20, 20)])
        diffs.append(scipy.stats.kendalltau(x[idx], gap[idx])[0] - scipy.stats.kendalltau(b[idx], gap[idx])[0])
    assert (d["ci_low"], d["ci_high"]) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])), abs=1e-12)
    below = sum(v <= 0 for v in diffs)
    assert d["p_value"] == pytest.approx(min(1, 2 * (1 + min(below, 300 - below)) / 301))


def test_loglog_fit_clusters_by_cell_as_statsmodels():
    import statsmodels.api as sm

    from pgen.stats import loglog_fit

    rng = np.random.default_rng(3)
    x, y, cells = _clustered_zoo(rng, 15, 2, 0.7, 0.1)
    x, y = np.exp(x), np.exp(0.5 * y)
    fit = loglog_fit(x, y, groups=cells)
    ref = sm.OLS(np.log(y), sm.add_constant(np.log(x))).fit(cov_type="cluster", cov_kwds={"groups": cells})
    assert fit.slope_ci == pytest.approx(tuple(ref.conf_int()[1]), abs=1e-12)
    assert fit.errors == "cluster-robust by cell (15 cells)" and loglog_fit(x, y).errors == "HC3"
    assert fit.slope_ci[1] - fit.slope_ci[0] > np.subtract(*loglog_fit(x, y).slope_ci[::-1])  # wider


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    from pgen.stats import holm

    p = np.random.default_rng(5).random(37) ** 3
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-15)
    with_nan = np.append(p, np.nan)
    assert np.isnan(holm(with_nan)[-1]) and holm(with_nan)[:-1] == pytest.approx(holm(p))


@pytest.mark.parametrize("call, msg", [
    (lambda: correlations([1, 2, 3, 4], [4, 3, 1, 2], n_boot=-5), "n_boot must be 0 or more"),
    (lambda: correlations([1, 2, 3, 4], [4, 3, 1, 2], n_boot=2.5), "whole number"),
    (lambda: correlations([1, 2, 3, 4], [4, 3, 1, 2], level=1.5), "level must be between 0 and 1"),
    (lambda: correlations([1, 2, 3, 4], [4, 3, 1, 2], n_boot=10**9), "over the limit of 1000000"),
    (lambda: correlations([1, 2, 3, 4], [4, 3, 1, 2], methods=("kendal",)), "unknown correlation"),
])
def test_public_statistics_validate_their_arguments(call, msg):
    with pytest.raises(StatsError, match=msg):
        call()


def test_cmi_refuses_a_non_finite_score():
    configs = {str(i): {"hparams": {"a": {"possible_values": [0, 1], "current_value": i % 2},
                                    "b": {"possible_values": [0, 1], "current_value": i // 2 % 2}},
                        "metrics": {"train_acc": 1.0, "test_acc": 0.5 + 0.05 * i}} for i in range(8)}
    scores = {str(i): float(i) for i in range(8)}
    assert math.isfinite(conditional_mutual_information(scores, configs))
    with pytest.raises(StatsError, match="non-finite score"):
        conditional_mutual_information({**scores, "3": float("nan")}, configs)


def test_cli_bounds_the_resamples(tmp_path, capsys):
    from pgen.cli import MAX_RESAMPLES, main
    from pgen.stats.resampling import MAX_RESAMPLES as STATS_MAX

    assert MAX_RESAMPLES == STATS_MAX
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path), "--bootstrap", "1000000000"])
    assert "must be at most 1000000" in capsys.readouterr().err

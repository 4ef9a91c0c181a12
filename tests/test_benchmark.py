"""pgen benchmark end to end on the tiny zoo and a PGDL fixture task."""

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import scipy.stats

from pgen.cli import main

PGDL = Path(__file__).parent / "fixtures" / "pgdl"


def test_benchmark_end_to_end_and_resume(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["benchmark", str(tiny_zoo), str(PGDL / "task_nin"), "--out", str(out), "--samples", "200",
            "--measures", "pvector_angle,sum_squared_weights,inverse_margin,mixup_margin"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "tau gap [95% CI]" in text and "task_nin: a format fixture, scored but not ranked" in text
    for name in ("benchmark.html", "benchmark.md", "ranking.png", "summary_tiny.csv", "models_tiny.csv",
                 "results.sqlite"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "summary_task_nin.csv").exists()  # the fixture is scored, never ranked
    assert "Format fixtures (scored, not ranked)" in (out / "benchmark.md").read_text()
    summary = pd.read_csv(out / "summary_tiny.csv").set_index("measure")
    models = pd.read_csv(out / "models_tiny.csv")
    assert list(summary.index) == ["pvector_angle", "sum_squared_weights", "inverse_margin", "mixup_margin"]
    # the statistics are those of sign x value, recomputed here with scipy
    for name, sign in (("sum_squared_weights", 1), ("mixup_margin", -1)):
        ref = scipy.stats.kendalltau(sign * models[name], models["gap"])[0]
        assert summary.loc[name, "tau_gap"] == pytest.approx(ref, abs=1e-12)
        ref = scipy.stats.kendalltau(sign * models[name], models["test_acc"])[0]
        assert summary.loc[name, "tau_test_acc"] == pytest.approx(ref, abs=1e-12)
    assert (summary["median_seconds"] > 0).all()
    # each tau has its bootstrap CI and the random-ranking spread beside it
    for col in ("tau_gap", "tau_test_acc"):
        assert (summary[f"{col}_ci_low"] <= summary[col]).all() and (summary[col] <= summary[f"{col}_ci_high"]).all()
    assert (summary["tau_null_sd"] > 0).all()
    # the same numbers as the one statistics entry point the report uses
    from pgen.stats import measure_statistics

    st = measure_statistics(models, "mixup_margin", n_boot=1000)
    row = st.kendall_row("test_acc")
    assert summary.loc["mixup_margin", "tau_test_acc"] == pytest.approx(-row["value"], abs=1e-12)
    assert summary.loc["mixup_margin", "tau_test_acc_ci_low"] == pytest.approx(-row["ci_high"], abs=1e-12)
    html = (out / "benchmark.html").read_text()
    assert "data:image/png;base64," in html and "tiny" in html
    with sqlite3.connect(out / "results.sqlite") as conn:
        before = conn.execute("SELECT COUNT(*), MAX(created) FROM results").fetchone()
    assert main(args) == 0  # resumes: nothing is recomputed
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*), MAX(created) FROM results").fetchone() == before


def test_benchmark_from_tables_redoes_the_statistics_alone(tiny_zoo, tmp_path, monkeypatch, capsys):
    """`pgen benchmark --from-tables DIR`, typed with relative paths from the folder above:
    the same summaries from the stored tables, without the zoo or the results store."""
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", str(tiny_zoo), "--out", "bench", "--samples", "200", "--bootstrap", "2000",
                 "--measures", "pvector_angle,sum_squared_weights,inverse_margin"]) == 0
    (tmp_path / "bench" / "results.sqlite").unlink()
    capsys.readouterr()
    assert main(["benchmark", "--from-tables", "bench", "--out", "again"]) == 0
    assert "tau gap [95% CI]" in capsys.readouterr().out
    first = pd.read_csv(tmp_path / "bench" / "summary_tiny.csv")
    again = pd.read_csv(tmp_path / "again" / "summary_tiny.csv")
    pd.testing.assert_frame_equal(first, again)
    assert (tmp_path / "again" / "benchmark.md").read_text().count("Holm") > 2
    assert main(["benchmark", "--from-tables", "nowhere"]) == 2
    assert "no benchmark_settings.json" in capsys.readouterr().err
    assert main(["benchmark", "--from-tables", "bench", str(tiny_zoo)]) == 2


def test_benchmark_rejects_unknown_measure(tmp_path, capsys):
    assert main(["benchmark", str(PGDL / "task_nin"), "--out", str(tmp_path), "--measures", "nope"]) == 2
    assert "unknown measure 'nope'" in capsys.readouterr().err


def test_final_models_view_drops_checkpoints(tiny_zoo):
    from pgen.zoo import load_zoo

    zoo = load_zoo(tiny_zoo)
    finals = zoo.final_models()
    assert 0 < len(finals) < len(zoo)
    assert all("@" not in e.id for e in finals) and len(zoo) == 12  # the full zoo is untouched


def test_benchmark_with_checkpoints_scores_every_entry(tiny_zoo, tmp_path):
    out = tmp_path / "bench"
    base = ["benchmark", str(tiny_zoo), "--samples", "100", "--measures", "sum_squared_weights"]
    assert main(base + ["--out", str(out / "finals")]) == 0
    assert main(base + ["--out", str(out / "all"), "--with-checkpoints"]) == 0
    finals = pd.read_csv(out / "finals" / "models_tiny.csv")
    every = pd.read_csv(out / "all" / "models_tiny.csv")
    assert len(every) == 12 and 0 < len(finals) < 12
    assert not finals["model_id"].str.contains("@").any() and every["model_id"].str.contains("@").any()


# ----------------------------------------------------------------------------- statistics that can rank


def test_paired_tau_difference_matches_a_direct_bootstrap():
    import numpy as np

    from pgen.stats import paired_tau_difference

    rng = np.random.default_rng(0)
    gap = rng.random(40)
    a = gap + 0.1 * rng.standard_normal(40)  # a good measure
    b = rng.random(40)  # an unrelated one
    d = paired_tau_difference(a, b, gap, n_boot=500, seed=3)
    ref = scipy.stats.kendalltau(a, gap)[0] - scipy.stats.kendalltau(b, gap)[0]
    assert d["diff"] == pytest.approx(ref, abs=1e-12) and d["n"] == 40
    # the same resamples, drawn independently here
    r = np.random.default_rng(3)
    diffs = []
    for _ in range(500):
        idx = r.integers(0, 40, 40)
        diffs.append(scipy.stats.kendalltau(a[idx], gap[idx])[0] - scipy.stats.kendalltau(b[idx], gap[idx])[0])
    assert (d["ci_low"], d["ci_high"]) == pytest.approx(tuple(np.quantile(diffs, [0.025, 0.975])), abs=1e-12)
    assert d["ci_low"] > 0  # resolved: a ranks the gap better than b
    same = paired_tau_difference(a, a, gap, n_boot=100)
    assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0


def test_robust_sign_agreement_by_hand():
    from pgen.stats import robust_sign_agreement

    # cells (lr, width) x 2 seeds; the measure orders lr right, width wrong
    rows = []
    for lr in (0.1, 0.01):
        for width in (8, 16):
            for seed in (0, 1):
                gap = (0.2 if lr == 0.1 else 0.1) + (0.05 if width == 16 else 0.0) + 0.001 * seed
                measure = (2.0 if lr == 0.1 else 1.0) - (0.5 if width == 16 else 0.0)
                rows.append({"hp.lr": lr, "hp.width": width, "hp.seed": seed, "gap": gap, "m": measure})
    table = pd.DataFrame(rows)
    grid = {"lr": [0.1, 0.01], "width": [8, 16], "seed": [0, 1]}
    # one environment per hyperparameter: its 2 pairs of cells (one per value of the other) pooled, 8 model pairs
    r = robust_sign_agreement(table, "m", grid, min_pairs=8)
    assert r["per_hparam"]["lr"] == {"mean": 1.0, "worst": 1.0, "environments": 1}
    assert r["per_hparam"]["width"] == {"mean": 0.0, "worst": 0.0, "environments": 1}
    assert r["mean"] == 0.5 and r["worst"] == 0.0 and r["environments"] == 2 and r["left_out"] == 0
    assert {(e["hparam"], e["from"], e["to"], e["pairs"]) for e in r["per_environment"]} == {
        ("lr", "0.1", "0.01", 8), ("width", "8", "16", 8)}  # values in the grid's order
    # environments with fewer pairs than the minimum are left out, and counted
    assert robust_sign_agreement(table, "m", grid, min_pairs=9) is None
    # pairs whose gap differs by less than min_difference are left out: none remain for width
    r = robust_sign_agreement(table, "m", {"lr": [0.1, 0.01], "width": [8, 16]}, min_difference=0.06, min_pairs=8)
    assert set(r["per_hparam"]) == {"lr"} and r["left_out"] == 1


def test_robust_view_references_bracket_what_the_design_can_tell():
    """On a grid of 2-seed cells, the noisy copy of the gap (tau 0.6) sits well above random
    rankings, whose worst environment is far below 0.5; the gap itself scores 1 everywhere."""
    import numpy as np

    from pgen.stats import robust_references, robust_sign_agreement

    rng = np.random.default_rng(0)
    rows = [{"hp.a": a, "hp.b": b, "hp.c": c, "hp.seed": s, "gap": 0.1 * a + 0.05 * b - 0.03 * c
             + 0.02 * rng.standard_normal()} for a in range(3) for b in range(2) for c in range(2) for s in range(2)]
    table = pd.DataFrame(rows)
    grid = {"a": [0, 1, 2], "b": [0, 1], "c": [0, 1], "seed": [0, 1]}
    ref = robust_references(table, grid, draws=100)
    assert ref["noisy"]["tau"] == pytest.approx(0.6, abs=0.03)
    assert ref["random"]["mean_median"] == pytest.approx(0.5, abs=0.05)
    assert ref["noisy"]["worst_median"] > ref["random"]["worst_q95"]
    assert robust_sign_agreement(table.assign(m=table["gap"]), "m", grid)["worst"] == 1.0


def test_converged_only_learned_baseline_and_fixtures(tmp_path):
    """A protocol-style zoo with one model recorded as not converged: it is left out of the
    statistics; the learned baseline is cross-validated by cell; the fixture is not ranked."""
    import json

    from pgen.benchmark import LEARNED, run_benchmark
    from pgen.learned import statnn_features
    from pgen.score import ScoreSettings
    from pgen.zoo.builder import Recipe, build_zoo
    import tomllib

    recipe = Recipe(tomllib.loads("""
name = "mini"
dataset = "digits"
seeds = [0, 1]
[train]
arch = "mlp"
epochs = 2
batch_size = 64
[grid]
width = [4, 16]
lr = [0.01, 0.1]
depth = [1, 2]
[checkpoints]
initial = false
"""), "test")
    zoo = build_zoo(recipe, tmp_path / "mini", progress=False)
    rows = [json.loads(line) for line in (zoo / "manifest.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        r["metrics"]["converged"] = i != 3
    (zoo / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_benchmark([zoo, PGDL / "kit_toy"], tmp_path / "out", progress=False, n_boot=50, learned=True,
                        measures=["pvector_angle", "sum_squared_weights"], settings=ScoreSettings(n_samples=100))
    assert res["excluded"]["mini"] == [rows[3]["id"]]
    s = res["summaries"]["mini"].set_index("measure")
    assert s.loc["sum_squared_weights", "models"] == 15
    assert {"tau_gap_minus_angle", "robust_environments", "cmi_gap", "cmi_null_q95", "cmi_null_p_holm",
            "tau_gap_p_holm", "tau_gap_holm", "bootstrap_unit"} <= set(s.columns)
    assert (s.loc[s["models"] > 0, "bootstrap_unit"] == "cells").all()  # 2 seeds per cell
    # 15 models in 8 cells: no pooled environment keeps 10 pairs, and the report says so
    assert (s["robust_environments"] == 0).all() and "robust_mean" not in s
    assert "Robust view: no environment of this zoo has 10 model pairs" in (tmp_path / "out" / "benchmark.md").read_text()
    assert LEARNED in s.index and res["learned"]["mini"][LEARNED]["groups"] == 8
    assert res["learned"]["mini"][LEARNED]["unit"] == "cells" and len(res["learned"]["mini"][LEARNED]["fold_seeds"]) == 5
    assert s.loc["learned:statnn-test_acc", "sign"] == -1 and s.loc[LEARNED, "sign"] == 1
    assert list(res["summaries"]) == ["mini"] and "kit_toy" in res["fixtures"]
    # StatNN features: first/last/hidden statistics, independent of depth in length
    from pgen.models import build_model

    shallow = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=4, depth=1)
    f1 = statnn_features(shallow)
    f3 = statnn_features(build_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=4, depth=3))
    assert f1.shape == f3.shape == (6 * 7 + 1,)
    w = shallow[1].weight.detach().double().flatten()  # the first Linear (after Flatten)
    assert f1[:2] == pytest.approx([float(w.mean()), float(w.var(unbiased=False))])
    assert f1[6] == pytest.approx(float(w.max()))


def test_cmi_on_a_grid_with_a_cell_left_out_equals_the_mean_over_filled_bins():
    import numpy as np

    from pgen.stats import StatsError, cmi_from_table

    rng = np.random.default_rng(4)
    rows = [{"hp.a": a, "hp.b": b, "gap": rng.random(), "m": rng.random()} for a in (0, 1, 2) for b in (0, 1)
            for _ in range(2)]
    table = pd.DataFrame(rows)
    grid = {"a": [0, 1, 2], "b": [0, 1]}
    part = table[~((table["hp.a"] == 2) & (table["hp.b"] == 1))]
    with pytest.raises(StatsError, match="incomplete hparam grid"):
        cmi_from_table(part, "m", grid)
    # the same models with the missing value removed from the grid: the same bins have pairs
    value, details = cmi_from_table(part, "m", grid, full_grid=False, details=True)
    assert 0 <= value <= 1 and len(details) == 2
    # a grid whose missing combination is simply absent from "possible" gives the same ratio
    part_ab = part[part["hp.a"] != 2]
    assert cmi_from_table(part_ab, "m", {"a": [0, 1], "b": [0, 1]}) == pytest.approx(
        cmi_from_table(part_ab, "m", {"a": [0, 1, 2], "b": [0, 1]}, full_grid=False), abs=1e-12)


def test_a_learned_predictor_that_cannot_read_a_zoo_is_reported_not_fatal(tmp_path):
    """An NFN reads one weight-space layout: on a zoo of two depths it is reported as not
    computed (naming the model and layer), while StatNN, which reads any depth, is summarized."""
    import torch

    from pgen.benchmark import LEARNED, run_benchmark
    from pgen.models import MLP
    from pgen.score import ScoreSettings
    from pgen.zoo import Zoo

    torch.manual_seed(0)
    nets = {f"m{i}": MLP((1, 8, 8), 10, width=8, depth=1 + i % 2) for i in range(8)}
    zoo = Zoo.from_models(nets, "digits", test_data="digits", name="own", hparams={k: {"a": i} for i, k in enumerate(nets)})
    res = run_benchmark([zoo], tmp_path, measures=["param_norm"], learned="statnn,nfn", progress=False, n_boot=20,
                        settings=ScoreSettings(n_samples=100), learned_settings={"epochs": 1})
    nfn = res["learned"]["own"]["learned:nfn-gap"]
    assert "error" in nfn and "model m1 has another weight-space layout" in nfn["error"]
    measures = set(res["summaries"]["own"]["measure"])
    assert LEARNED in measures and "learned:nfn-gap" not in measures
    text = (tmp_path / "benchmark.md").read_text()
    assert "learned:nfn-test_acc: not computed: zoo own, model m1 has another weight-space layout" in text


def test_learned_predictions_added_to_a_finished_benchmark_from_its_tables(tiny_zoo, tmp_path, monkeypatch):
    """`pgen benchmark --from-tables DIR --learned statnn` fits on the zoo recorded in DIR,
    adds the out-of-fold columns and their records (folds, seeds) to DIR's tables, and a
    later --from-tables without --learned keeps them."""
    import json

    from pgen.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", str(tiny_zoo), "--out", "b", "--samples", "50", "--measures", "num_params",
                 "--bootstrap", "20"]) == 0
    assert "learned:statnn-gap" not in pd.read_csv("b/models_tiny.csv")
    assert main(["benchmark", "--from-tables", "b", "--learned", "statnn,nfn", "--learned-epochs", "1",
                 "--learned-workers", "2", "--bootstrap", "20"]) == 0
    table = pd.read_csv("b/models_tiny.csv")
    assert {"learned:statnn-gap", "learned:statnn-test_acc", "learned_fold"} <= set(table.columns)
    assert table["learned:statnn-gap"].notna().all()
    record = json.loads(open("b/benchmark_settings.json").read())["learned"]["tiny"]
    assert record["learned:statnn-gap"]["folds"] == record["learned:statnn-gap"]["groups"] == 4
    assert len(record["learned:statnn-test_acc"]["fold_seeds"]) == 4
    # the tiny zoo mixes MLPs and CNNs: the NFN is recorded as not computed, naming the layout
    assert "another weight-space layout" in record["learned:nfn-gap"]["error"]
    assert main(["benchmark", "--from-tables", "b", "--bootstrap", "20"]) == 0
    assert "learned:statnn-gap: out of fold over 4 folds" in open("b/benchmark.md").read()
    assert "learned:statnn-gap" in set(pd.read_csv("b/summary_tiny.csv")["measure"])


def test_learned_predictors_are_compared_with_statnn_on_the_same_resamples():
    import numpy as np

    from pgen.benchmark import learned_comparisons

    rng = np.random.default_rng(0)
    n = 120
    test_acc = rng.random(n)
    table = pd.DataFrame({"model_id": [f"m{i}" for i in range(n)], "hp.lr": np.repeat(np.arange(40), 3),
                          "hp.seed": np.tile(np.arange(3), 40), "test_acc": test_acc,
                          "learned:statnn-test_acc": test_acc + rng.normal(0, 0.5, n),
                          "learned:nfn-test_acc": test_acc + rng.normal(0, 0.05, n)})
    pairs = learned_comparisons(table, n_boot=400)
    assert len(pairs) == 1
    row = pairs.iloc[0]
    assert row["predictor"] == "learned:nfn-test_acc" and row["unit"] == "cells" and row["units"] == 40
    assert row["ci_low"] > 0.2 and row["p_holm"] <= 0.05  # the nearly exact predictor ranks test accuracy far better
    swapped = table.rename(columns={"learned:statnn-test_acc": "learned:nfn-test_acc",
                                    "learned:nfn-test_acc": "learned:statnn-test_acc"})
    assert learned_comparisons(swapped, n_boot=400).iloc[0]["ci_high"] < 0

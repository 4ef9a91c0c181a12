"""The registered judgement of the P-vector variants (docs/pvector-variants.md), from a
benchmark folder's stored tables (summary_<zoo>.csv, models_<zoo>.csv): H1-H4 per variant
and zoo, exactly as registered, and the registered verdicts.

    python benchmarks/pvector_variants.py reports/pvector-variants [--out FILE.csv]
    python benchmarks/pvector_variants.py reports/pvector-variants reports/benchmark-example/smallcnn-mnist5k

Several folders are judged together (the zoo at scale was benchmarked on its own, with its
own resample count, recorded in its benchmark_settings.json and used here).

H1: tau_gap_holm == "intended" (Holm over every measure of the zoo, as the benchmark does).
H2: tau_gap_minus_angle_holm == "better".
H3: cmi_null_holm == "above null" (undecided, empty, on a zoo without a grid, where the
    CMI is not defined: smallcnn-mnist5k; the verdict then rests on the other primary zoos).
H4: the paired bootstrap difference of the variant's tau (gap) against each of
    label_variation, inverse_margin and pacbayes_flatness, resampling the zoo's cells,
    10000 resamples, Holm over the 6 x 3 comparisons of one zoo, resolved above 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pgen.benchmark import _ranked
from pgen.measures import get_measure
from pgen.stats import holm, paired_tau_difference

VARIANTS = ("pvector_angle_layer_mean", "pvector_subspace_k5", "pvector_angle_test_inputs",
            "pvector_angle_pseudo_test", "pvector_feature_shift", "pvector_angle_own_data")
COMPARATORS = ("label_variation", "inverse_margin", "pacbayes_flatness")
ROLE = {"fantastic-mnist1d": "exploration", "fantastic-mnist5k": "primary", "smallcnn-mnist5k": "primary",
        "digits": "secondary", "mnist5k": "secondary"}


def _cells(table: pd.DataFrame):
    cols = sorted(c for c in table.columns if c.startswith("hp.") and c != "hp.seed")
    return ["\x1f".join(map(str, r)) for r in table[cols].itertuples(index=False)] if cols else None


def judge(folder: Path, n_boot: int | None = None) -> pd.DataFrame:
    record = json.loads((folder / "benchmark_settings.json").read_text())
    n_boot = n_boot or int(record.get("n_boot", 10_000))
    rows = []
    for zoo in record.get("zoos", []):
        summary = pd.read_csv(folder / f"summary_{zoo}.csv").set_index("measure")
        table, _ = _ranked(pd.read_csv(folder / f"models_{zoo}.csv"), record.get("converged_only", True))
        oriented = {m: get_measure(m).sign * table[m].to_numpy(float) for m in VARIANTS + COMPARATORS if m in table}
        pairs = [(v, c) for v in VARIANTS for c in COMPARATORS if v in oriented and c in oriented]
        diffs = {p: paired_tau_difference(oriented[p[0]], oriented[p[1]], table["gap"], n_boot=n_boot,
                                          groups=_cells(table)) for p in pairs}
        adjusted = dict(zip(pairs, holm([diffs[p]["p_value"] for p in pairs])))
        for v in VARIANTS:
            if v not in summary.index or not summary.loc[v, "models"]:
                rows.append({"zoo": zoo, "role": ROLE.get(zoo, ""), "variant": v, "scored": False})
                continue
            s = summary.loc[v]
            h4 = {c: bool(diffs[(v, c)]["ci_low"] > 0 and adjusted[(v, c)] <= 0.05) for c in COMPARATORS
                  if (v, c) in diffs}
            rows.append({"zoo": zoo, "role": ROLE.get(zoo, ""), "variant": v, "scored": True, "models": s["models"],
                         "tau_gap": s["tau_gap"], "ci_low": s["tau_gap_ci_low"], "ci_high": s["tau_gap_ci_high"],
                         "H1_intended": s["tau_gap_holm"] == "intended", "tau_gap_holm": s["tau_gap_holm"],
                         "H2_beats_angle": s.get("tau_gap_minus_angle_holm") == "better",
                         "minus_angle": s.get("tau_gap_minus_angle"),
                         # no CMI where a zoo has no grid (runs that drew their hyperparameters): not decided there
                         "H3_above_random": (s.get("cmi_null_holm") == "above null")
                         if isinstance(s.get("cmi_null_holm"), str) else None,
                         **{f"H4_vs_{c}": h4.get(c) for c in COMPARATORS},
                         **{f"diff_vs_{c}": diffs[(v, c)]["diff"] for c in COMPARATORS if (v, c) in diffs},
                         "H4_all": bool(h4) and all(h4.values())})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="benchmark folders (their zoos are judged together)")
    ap.add_argument("--out", default=None, help="CSV of the verdicts (default FIRST_FOLDER/variants_verdicts.csv)")
    ap.add_argument("--bootstrap", type=int, default=None,
                    help="H4's resamples (default: each folder's benchmark count, 10000 where unrecorded)")
    args = ap.parse_args()
    folders = [Path(f) for f in args.folders]
    table = pd.concat([judge(f, args.bootstrap) for f in folders], ignore_index=True)
    out = Path(args.out) if args.out else folders[0] / "variants_verdicts.csv"
    table.to_csv(out, index=False)
    cols = ["zoo", "role", "variant", "tau_gap", "ci_low", "ci_high", "tau_gap_holm", "H2_beats_angle",
            "H3_above_random", "H4_all"]
    with pd.option_context("display.width", 220, "display.max_rows", 100):
        print(table[[c for c in cols if c in table]].round(3).to_string(index=False))
    primary = table[(table["role"] == "primary") & table["scored"]]
    for v in VARIANTS:
        p = primary[primary["variant"] == v]
        if p.empty:
            continue
        verdicts = [name for name, col in (("predicts the gap", "H1_intended"), ("beats the angle", "H2_beats_angle"),
                                           ("beats random rankings", "H3_above_random"),
                                           ("matches the best hand-made measures", "H4_all"))
                    if p[col].notna().any() and bool(p[col].dropna().astype(bool).all())]
        print(f"{v}: {', '.join(verdicts) if verdicts else 'none of the registered verdicts'} "
              f"(primary zoos: {', '.join(p['zoo'])})")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

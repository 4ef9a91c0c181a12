"""CLI: --help everywhere, the study and the pvector command end to end."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pgen.cli import build_parser, main


def subcommands(parser):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield [name], sub
                for path, deeper in subcommands(sub):
                    yield [name] + path, deeper


def test_help_everywhere(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    paths = list(subcommands(build_parser()))
    assert paths
    for path, _ in paths:
        with pytest.raises(SystemExit) as exc:
            main(path + ["--help"])
        assert exc.value.code == 0
        assert "usage: pgen" in capsys.readouterr().out


@pytest.mark.parametrize("args, complaint", [
    (["score", "digits", "--limit", "-1"], "--limit: must be at least 1; got -1"),
    (["score", "digits", "--samples", "-5"], "--samples: must be at least 2 (or 0 for all); got -5"),
    (["score", "digits", "--workers", "0"], "--workers: must be at least 1; got 0"),
    (["zoo", "build", "digits", "--limit", "-1"], "--limit: must be at least 1; got -1"),
    (["benchmark", "digits", "--bootstrap", "-3"], "--bootstrap: must be at least 0; got -3"),
    (["pgdl", "predict", "x", "--time-budget", "inf"], "--time-budget: must be a positive, finite"),
    (["score", "digits", "--seed", "x1"], "--seed: 'x1' is not an integer"),
])
def test_a_count_out_of_range_is_refused_before_any_work(args, complaint, capsys):
    # --limit -1 once scored every model but the last, --samples -5 all but five: silently wrong.
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and complaint in capsys.readouterr().err


def test_the_api_refuses_a_negative_limit_too(tiny_zoo, tmp_path):
    from pgen.errors import InputError
    from pgen.score import score_zoo
    from pgen.zoo.builder import build_zoo

    with pytest.raises(InputError, match="limit must be at least 1"):
        score_zoo(tiny_zoo, tmp_path / "out", limit=-1)
    with pytest.raises(InputError, match="limit must be at least 1"):
        build_zoo("tiny", out=tmp_path / "zoo", limit=0)


def test_study_end_to_end(tmp_path):
    out = tmp_path / "study"
    assert main(["study", "--seeds", "1", "--epochs", "2", "--out", str(out)]) == 0
    models = pd.read_csv(out / "study.csv")
    assert list(models["model"]) == ["mlp-seed0", "cnn-seed0"]
    for col in ("angle_init_centered", "angle_trained_centered", "angle_init_uncentered"):
        assert models[col].between(0, 90).all()
    assert (out / "study.png").stat().st_size > 10_000
    pairs = pd.read_csv(out / "study_pairs.csv")
    assert set(pairs["centering"]) == {"centered", "uncentered"}
    md = (out / "study.md").read_text()
    assert "A random unit vector over 450 samples sits at" in md  # the null beside the angles
    assert "data:image/png;base64," in (out / "study.html").read_text()


def test_pvector_command(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((50, 8))
    np.save(tmp_path / "f.npy", x)
    assert main(["pvector", str(tmp_path / "f.npy"), "--save", str(tmp_path / "u.npy"), "--against", str(tmp_path / "u.npy")]) == 0
    out = capsys.readouterr().out
    assert '"sigma1"' in out and "angle: 0.0000 deg" in out
    u = np.load(tmp_path / "u.npy")
    xc = x - x.mean(0)
    ref = np.linalg.svd(xc, full_matrices=False)[0][:, 0]
    assert abs(abs(u @ ref) - 1) < 1e-12


def test_error_names_the_problem(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.full((4, 3), np.nan))
    assert main(["pvector", str(tmp_path / "bad.npy")]) == 2
    assert "NaN or Inf" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "pgen.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "pgen" in out.stdout


def test_data_command(tmp_path, capsys):
    assert main(["data", "digits", "--split", "test"]) == 0
    assert "digits test: 450 samples" in capsys.readouterr().out
    assert main(["data", "cifar10", "--root", str(tmp_path)]) == 2
    assert "--download" in capsys.readouterr().err


def test_version_and_help_load_no_numeric_stack():
    # `pgen --version` / `--help` must answer at once: nothing heavy is imported for them.
    import subprocess
    import sys

    code = ("import sys\nfrom pgen.cli import main\n"
            "for args in (['--version'], ['--help'], ['score', '--help'], ['zoo', 'import', '--help']):\n"
            "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('numpy', 'scipy', 'torch', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    import pgen

    assert pgen.p_vector is pgen.pvector.p_vector  # the lazy names resolve to the real functions


# ----------------------------------------------------------------------------- #32 item 8: what a user meets

def test_help_shows_no_doubled_percent_signs(capsys):
    for path, _ in subcommands(build_parser()):
        with pytest.raises(SystemExit):
            main(path + ["--help"])
        assert "%%" not in capsys.readouterr().out, path


def test_measures_fit_a_100_column_terminal_and_say_which_read_no_samples(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    main(["measures"])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100 and "sum_squared_weights" in out
    main(["measures", "ww_alpha", "sum_squared_weights", "--long"])
    long = capsys.readouterr().out
    assert long.count("samples: none: the weights alone") == 2


def test_zoo_info_on_an_embedded_zoo_not_built_yet(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PGEN_CACHE", str(tmp_path / "cache"))
    assert main(["zoo", "info", "mnist5k"]) == 2
    assert "the embedded zoo mnist5k is not built yet: `pgen zoo build mnist5k`" in capsys.readouterr().err


def test_checkpoints_and_training_data_share_the_umask(tiny_zoo):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    ckpts = sorted((tiny_zoo / "checkpoints").glob("*.safetensors"))
    npz = sorted((tiny_zoo / "checkpoints").glob("*-train.npz"))
    assert ckpts and npz
    modes = {stat.S_IMODE(p.stat().st_mode) for p in ckpts + npz}
    assert modes == {0o666 & ~umask}


def test_a_whole_pickled_model_is_refused_with_what_to_save_instead(tmp_path):
    import torch

    from pgen.zoo.native import load_state_dict
    from pgen.zoo import ZooError

    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")
    with pytest.raises(ZooError, match=r"pickled Python objects .* save model.state_dict\(\) instead") as exc:
        load_state_dict(tmp_path / "whole.pt")
    assert "weights_only" not in str(exc.value) and "add_safe_globals" not in str(exc.value)


def test_score_writes_what_it_says_and_a_constant_measure_says_why(tiny_zoo, tmp_path, capsys):
    assert main(["score", str(tiny_zoo), "--out", str(tmp_path / "o"), "--samples", "100", "--bootstrap", "50",
                 "--measures", "pvector_angle,num_params"]) == 0
    out = capsys.readouterr().out
    listed = out.split("also in ")[1]
    for name in ("models.csv", "correlations.csv", "summary.json", "num_params_histogram.png"):
        assert name in listed and (tmp_path / "o" / name).is_file()
    # a measure constant over the zoo (one architecture: num_params) says why it has no correlation
    import torch

    from pgen.report import write_report
    from pgen.score import ScoreSettings, score_zoo
    from pgen.zoo import Zoo

    nets = {}
    for i in range(4):
        torch.manual_seed(i)
        nets[f"m{i}"] = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    zoo = Zoo.from_models(nets, "digits", metrics={k: {"test_acc": 0.5 + 0.1 * i} for i, k in enumerate(nets)})
    run = score_zoo(zoo, tmp_path / "c", settings=ScoreSettings(n_samples=100, measures=("num_params",)),
                    progress=False)
    write_report(run, tmp_path / "c", n_boot=20)
    md = (tmp_path / "c" / "report.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("> **num_params**"))
    assert "No rank correlation: num\\_params is constant over the 4 models" in line  # markdown-escaped

"""Score your own models: 4 torchvision ResNet-18s, trained briefly on the digits, saved
the way people save them, imported into a pgen zoo and scored (docs/guide/own-models.md, "Score your own
models"). Runs in about a minute on 2 CPU cores:

    python examples/score_own_models.py [WORKDIR]
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

import pgen
from pgen.data import dataset_arrays, load_dataset
from pgen.models import build_model

work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="pgen-own-"))
(work / "runs").mkdir(parents=True, exist_ok=True)
x, y = dataset_arrays(load_dataset("digits", "train"))
x_test, y_test = dataset_arrays(load_dataset("digits", "test"))
arch = "torchvision:resnet18"
kwargs = {"num_classes": 10, "in_channels": 1, "small_input": True}  # grey 8x8 inputs: adapt the stem

rows, models = [], {}
for i, lr in enumerate([0.3, 0.1, 0.03, 0.01]):
    torch.manual_seed(i)
    net = build_model(arch, input_shape=(1, 8, 8), **kwargs)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(i)
    for step in range(15):  # a few steps: the point is the workflow, not the accuracy
        idx = torch.randint(len(x), (64,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        test_acc = float((net(x_test).argmax(1) == y_test).float().mean())
    state = net.state_dict()
    path = work / "runs" / f"resnet18-lr{lr}.pt"
    torch.save(state if i % 2 else {"model": state, "epoch": 1}, path)  # two wrappings people use
    rows.append({"checkpoint": path.name, "test_acc": test_acc, "hp.lr": lr})
    models[path.stem] = net
pd.DataFrame(rows).to_csv(work / "metrics.csv", index=False)

# 1. from the command line: import (the checkpoints are hard-linked into the zoo), then score
pgen_cli = [sys.executable, "-m", "pgen.cli"]
subprocess.run(pgen_cli + ["zoo", "import", *[str(p) for p in sorted((work / "runs").glob("*.pt"))], "--arch", arch,
                           "--model-kwargs", '{"num_classes": 10, "in_channels": 1, "small_input": true}',
                           "--dataset", "digits", "--metrics", str(work / "metrics.csv"), "--out", str(work / "zoo")],
               check=True)
subprocess.run(pgen_cli + ["score", str(work / "zoo"), "--out", str(work / "report"), "--samples", "500"], check=True)

# 2. from Python, no files needed
run = pgen.score_models(models, "digits", n_samples=500, metrics={r["checkpoint"][:-3]: {"test_acc": r["test_acc"]}
                                                                  for r in rows})
print(run.table[["model_id", "pvector_angle", "train_acc", "test_acc", "gap"]].to_string(index=False))
print(f"{len(run.errors)} failure(s)")
print(f"files in {work}")

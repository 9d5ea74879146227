"""House prices: square footage -> price with a linear model and plain SGD.

    python examples/house_prices.py [--epochs 40]

The run of examples/house_prices.yaml written out with the library API. The feature and
the target are standardised with the training rows' statistics (the csv dataset does it),
so SGD converges in a few epochs; predictions are turned back into dollars.
"""

import argparse
from pathlib import Path

import torch
from torch import nn

import purestep as ps
from purestep.data import Batches
from purestep.data.datasets import csv
from purestep.train import fit, make_metrics

parser = argparse.ArgumentParser(description="house prices: a linear model and SGD")
parser.add_argument("--epochs", type=int, default=40)
args = parser.parse_args()

# 1500/2000/2500 sq ft -> $300k/$400k/$500k, plus noisy houses; 20 % held out.
path = str(Path(__file__).with_name("house_prices.csv"))
train = csv("train", seed=0, path=path, target="price")
val = csv("val", seed=0, path=path, target="price")
scaler = train.standardizer
assert scaler is not None and scaler.target_std is not None and scaler.target_mean is not None

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(1, 1), nn.Flatten(0))  # price = w * sqft + b
opt = ps.optim.sgd(lr=0.05)
# Metrics in dollars: the metric set undoes the target's standardisation.
metrics = make_metrics(
    ["mae", "r2"], "regression", target_scale=scaler.target_std, target_shift=scaler.target_mean
)
state, history = fit(
    ps.TrainState.create(model, opt, seed=0),
    ps.make_train_step(model, nn.MSELoss(), opt, metrics_fn=metrics.stats),
    Batches(train.data, 8, seed=0),
    epochs=args.epochs,
    eval_step=ps.make_eval_step(model, nn.MSELoss(), metrics_fn=metrics.stats),
    val_data=Batches(val.data, 64, shuffle=False),
    metrics=metrics,
)

# The learned line in dollars per square foot, and predictions for new houses.
w, b = float(state.params["0.weight"]), float(state.params["0.bias"])
slope = w * float(scaler.target_std) / float(scaler.feature_std[0])
intercept = (
    float(scaler.target_mean) + float(scaler.target_std) * b - slope * float(scaler.feature_mean[0])
)
print(f"price = {slope:,.2f} $/sq ft * sqft {intercept:+,.0f} $   (true line: 200 * sqft)")
ps.load_state_into(model, state)
sqft = torch.tensor([[1500.0], [2000.0], [2500.0], [3000.0]])
with torch.no_grad():
    predicted = model(scaler.features(sqft)) * scaler.target_std + scaler.target_mean
for s, p in zip(sqft[:, 0].tolist(), predicted.tolist(), strict=True):
    print(f"{s:,.0f} sq ft -> ${p:,.0f}")

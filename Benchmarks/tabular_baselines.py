#!/usr/bin/env python3
"""scikit-learn baselines on the same train/validation files the tabular configs use
(data/tabular/*/{train,val}.h5 from launch/prepare-data.sh): ordinary least squares on the
diabetes table (R², RMSE) and logistic regression on standardized breast-cancer features
(accuracy). Needs h5py, numpy and scikit-learn (pip install scikit-learn into Benchmarks/.venv).

    Benchmarks/.venv/bin/python Benchmarks/tabular_baselines.py
"""
import h5py
import numpy as np
import sklearn
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score


def load(name, split):
    with h5py.File(f"data/tabular/{name}/{split}.h5", "r") as f:
        return f["features"][:], f["labels"][:]


x, y = load("diabetes", "train")
vx, vy = load("diabetes", "val")
prediction = LinearRegression().fit(x, y).predict(vx)
print(f"scikit-learn {sklearn.__version__} diabetes LinearRegression: R² {r2_score(vy, prediction):.4f}  "
      f"RMSE {mean_squared_error(vy, prediction) ** 0.5:.4f}  ({len(vy)} held-out rows)")

x, y = load("breast-cancer", "train")
vx, vy = load("breast-cancer", "val")
mean, std = x.mean(axis=0), x.std(axis=0)
model = LogisticRegression(max_iter=5000).fit((x - mean) / std, y)
print(f"scikit-learn {sklearn.__version__} breast-cancer LogisticRegression: accuracy "
      f"{accuracy_score(vy, model.predict((vx - mean) / std)):.4f}  ({len(vy)} held-out rows)")

"""An ordinary analysis script: read training logs (CSV) with pandas, summarise them, plot them with matplotlib
to a PNG. Nothing in it knows about labstack."""

import sys

import matplotlib.pyplot as plt
import pandas as pd


def main(paths):
    fig, ax = plt.subplots(figsize=(6, 4))
    for path in paths:
        history = pd.read_csv(path)
        print(history.describe().loc[["mean", "max"]].to_string())
        ax.plot(history["epoch"] + 1, history["accuracy"], marker="o", label=f"{path} (train)")
        ax.plot(history["epoch"] + 1, history["val_accuracy"], marker="s", label=f"{path} (validation)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig("history.png", dpi=100)
    print("wrote history.png")


if __name__ == "__main__":
    main(sys.argv[1:] or ["history.csv"])

"""An ordinary Keras script, as in the digit-recognizer notebooks: read train.csv (a label column and 784 pixel
columns) with pandas, train a small convnet, log the epochs to CSV, save the model. Nothing in it knows about
labstack."""

import argparse

import keras
import numpy as np
import pandas as pd
from keras import layers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--csv", default="train.csv")
    args = parser.parse_args()

    frame = pd.read_csv(args.csv)
    labels = frame.pop("label").to_numpy()
    pixels = frame.to_numpy(dtype="float32").reshape(-1, 28, 28, 1) / 255.0
    print(f"{len(frame)} images, classes {np.unique(labels).tolist()}")

    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(
        pixels,
        labels,
        batch_size=128,
        epochs=args.epochs,
        validation_split=0.2,
        callbacks=[keras.callbacks.CSVLogger("history.csv")],
        verbose=2,
    )
    model.save("digits.keras")


if __name__ == "__main__":
    main()

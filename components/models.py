"""The classifiers `fmnist train` can fit: model input is a batch of 28x28 float images in [0, 1].

`mlp` is the workshop network unchanged; `cnn` is a small convolutional network that is
clearly more accurate and still trains in minutes on two CPU cores. Both output logits.
"""
from __future__ import annotations

from components.constants import IMAGE_SIZE, NUM_CLASSES

MODEL_NAMES = ("mlp", "cnn")
# Training steps per call into TensorFlow. A step of these small models costs less than
# Keras' per-call Python overhead, so 64 steps per call train about twice as fast; the
# updates, and so the weights, are identical to one step per call (tests/test_train.py).
STEPS_PER_EXECUTION = 64


def build_model(
    name: str, *, learning_rate: float, decay_steps: int | None = None, steps_per_execution: int = STEPS_PER_EXECUTION
):  # -> keras.Model
    """A compiled model: Adam, sparse categorical cross-entropy from logits, accuracy.

    With `decay_steps`, Adam's learning rate falls along a cosine from `learning_rate` to 0
    over that many steps; without, it stays constant (the tutorial's recipe).
    """
    import keras

    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    model = _mlp(keras) if name == "mlp" else _cnn(keras)
    if decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=decay_steps)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def _mlp(keras):
    # The workshop network: exactly Flatten -> Dense(128, relu) -> Dense(10) logits.
    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(NUM_CLASSES),
        ],
        name="mlp",
    )


def _cnn(keras):
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE)),
            layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1)),
            layers.Conv2D(32, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.4),  # the dense head over-fits within 10 epochs without it
            layers.Dense(128, activation="relu"),
            layers.Dense(NUM_CLASSES),
        ],
        name="cnn",
    )

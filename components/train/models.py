"""The classifiers `fmnist train` can fit: model input is a batch of 28x28 float images in [0, 1].

`mlp` is the workshop network unchanged; `cnn` is a small convolutional network that is
clearly more accurate and still trains in minutes on two CPU cores. Both output logits;
training appends a fitted temperature (`with_temperature`) so that their softmax is calibrated.
"""

from __future__ import annotations

import dataclasses

from components.constants import IMAGE_SIZE, NUM_CLASSES

MODEL_NAMES = ("mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How `fmnist train` fits a model unless told otherwise (Adam with a cosine decay to 0)."""

    epochs: int
    batch_size: int
    learning_rate: float


RECIPES = {
    # The workshop's batch and learning rate; 20 epochs under the cosine decay instead of the
    # tutorial's 10 constant ones: 0.89+ on the test split (docs/benchmarks.md).
    "mlp": Recipe(epochs=20, batch_size=32, learning_rate=0.001),
    # Batches of 128 keep both cores busy in the convolutions; 18 epochs cost ≈ 1,020 s of
    # CPU time, ≈ 8.5 minutes on two idle cores (docs/benchmarks.md).
    "cnn": Recipe(epochs=18, batch_size=128, learning_rate=0.002),
}
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


def with_temperature(model, temperature: float):  # -> keras.Model
    """The same network (its layers, so its weights) with its logits divided by `temperature`.

    A built-in Rescaling layer by 1/T at the end: model.keras, the SavedModel and scoring
    all apply the temperature without any code of ours, and the predicted class is unchanged.
    """
    import keras

    return keras.Sequential(
        [keras.Input(model.input_shape[1:]), *model.layers, keras.layers.Rescaling(1 / temperature, name="temperature")],
        name=model.name,
    )


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

    def conv_block(filters: int) -> list:
        return [
            layers.Conv2D(filters, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
        ]

    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE)),
            layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1)),
            # Augmentation, active in training only (identity when scoring): garments mirrored
            # left-right. Shifts by up to 2 pixels as well made it under-fit (0.9244 against
            # 0.9315, docs/benchmarks.md). Seeded by keras.utils.set_random_seed: reproducible.
            layers.RandomFlip("horizontal"),
            *conv_block(32),  # 28x28 -> 14x14
            *conv_block(64),  # -> 7x7
            # Two convolutions at 7x7, where they are cheap: 0.9341 against 0.9315 with one.
            layers.Conv2D(128, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            *conv_block(128),  # -> 3x3
            layers.Flatten(),
            layers.Dropout(0.3),  # the dense head over-fits without it
            layers.Dense(128, activation="relu"),
            layers.Dense(NUM_CLASSES),
        ],
        name="cnn",
    )

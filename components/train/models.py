"""The classifiers `fmnist train` can fit: model input is a batch of 28x28 float images in [0, 1].

`mlp` is the workshop network unchanged; `cnn` is a small convolutional network that is
clearly more accurate and still trains in minutes on two CPU cores. Both output logits;
training publishes them as `published_model` builds them: with a fitted temperature, so that
their softmax is calibrated, and for the CNN averaged over each image and its mirror.
"""

from __future__ import annotations

import dataclasses
import functools

from components.constants import IMAGE_SIZE, NUM_CLASSES

MODEL_NAMES = ("mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How `fmnist train` fits a model unless told otherwise (Adam with a cosine decay to 0)."""

    epochs: int
    batch_size: int
    learning_rate: float
    # Share of each label's probability spread over all classes in the loss (0: plain
    # cross-entropy). Keeps the network from chasing certainty on garments that look alike.
    label_smoothing: float = 0.0
    # Polyak averaging: the weights validated, kept and published are an exponential moving
    # average of the trained ones, with this momentum once warmed up (None: the trained weights
    # themselves). It evens out the noise of bfloat16 steps, which differs between CPU kinds.
    weight_averaging: float | None = None


RECIPES = {
    # The workshop's batch and learning rate; 20 epochs under the cosine decay instead of the
    # tutorial's 10 constant ones: 0.89+ on the test split (docs/benchmarks.md).
    "mlp": Recipe(epochs=20, batch_size=32, learning_rate=0.001),
    # Batches of 128 keep both cores busy in the convolutions; with the erasing augmentation the
    # network still gains up to epoch 26 (docs/benchmarks.md has the time and accuracy).
    "cnn": Recipe(epochs=26, batch_size=128, learning_rate=0.002, label_smoothing=0.1, weight_averaging=0.999),
}
# Networks trained on mirrored images too (RandomFlip) that predict from the mean of the logits
# of an image and of its left-right mirror: a garment's class does not depend on its side.
MIRROR_AVERAGED = frozenset({"cnn"})
# Training steps per call into TensorFlow. A step of these small models costs less than
# Keras' per-call Python overhead, so 64 steps per call train about twice as fast; the
# updates, and so the weights, are identical to one step per call (tests/test_train.py).
STEPS_PER_EXECUTION = 64
# CPU flags (Linux's names) of the instructions that compute bfloat16 natively: AMX, AVX-512 BF16.
BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
ERASING_FACTOR = 1.0  # each batch erases a patch in a random share (0 to 100%) of its images


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
    smoothing, averaging = RECIPES[name].label_smoothing, RECIPES[name].weight_averaging
    model.compile(
        optimizer=_averaged_adam(keras)(learning_rate=learning_rate, use_ema=True, ema_momentum=averaging)
        if averaging
        else keras.optimizers.Adam(learning_rate=learning_rate),
        loss=_smoothed_cross_entropy(smoothing) if smoothing else keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def _averaged_adam(keras):
    """Adam whose moving average of the weights warms up as TensorFlow's ExponentialMovingAverage
    does with `num_updates`: momentum min(m, (1 + t) / (10 + t)) at step t. Keras' own holds m from
    the second step, so a short training would publish weights close to their random start."""
    from keras import ops

    class AveragedAdam(keras.optimizers.Adam):
        def _update_model_variables_moving_average(self, trainable_variables):
            step = ops.cast(self.iterations, "float32")
            warm = ops.minimum(self.ema_momentum, ops.divide(ops.add(step, 1.0), ops.add(step, 10.0)))
            for variable, average in zip(trainable_variables, self._model_variables_moving_average, strict=True):
                if average is not None:
                    momentum = ops.cast(warm, variable.dtype)
                    average.assign(ops.add(ops.multiply(momentum, average), ops.multiply(ops.subtract(1, momentum), variable)))

    return AveragedAdam


def _smoothed_cross_entropy(smoothing: float):
    """Cross-entropy from logits against class indices, each label smoothed by `smoothing`."""
    from keras import ops

    def loss(labels, logits):
        one_hot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), NUM_CLASSES)
        targets = one_hot * (1 - smoothing) + smoothing / NUM_CLASSES
        return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)

    return loss


def published_model(name: str, fitted, temperature: float = 1.0):  # -> keras.Model
    """The fitted network as training publishes it: logits divided by `temperature`, and for a
    network in MIRROR_AVERAGED, the mean of the logits of each image and of its mirror.

    Built from built-in layers and ops only, so model.keras loads anywhere Keras does.
    """
    calibrated = with_temperature(fitted, temperature)
    return with_mirror_average(calibrated) if name in MIRROR_AVERAGED else calibrated


def with_mirror_average(model):  # -> keras.Model
    """The same network (its weights) scoring each image and its left-right mirror, logits averaged."""
    import keras

    images = keras.Input(model.input_shape[1:])
    mirrored = keras.ops.flip(images, axis=2)  # (batch, row, column): the columns reversed
    averaged = keras.layers.Average(name="mirror_average")([model(images), model(mirrored)])
    return keras.Model(images, averaged, name=model.name)


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


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The instruction sets this machine's CPU reports (/proc/cpuinfo; none where there is none),
    read once per process."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((frozenset(line.split(":", 1)[1].split()) for line in cpuinfo if line.startswith("flags")), frozenset())
    except OSError:
        return frozenset()


def compute_dtype() -> str:
    """The Keras dtype policy of the CNN's layers but the logits (whose weights stay float32).

    bfloat16 where the CPU computes it natively: oneDNN runs the CNN several times faster than
    in float32. Elsewhere (AVX2) bfloat16 is emulated, eight times slower than float32
    (docs/benchmarks.md), so float32. The logits stay float32 for the loss and the temperature.
    """
    return "mixed_bfloat16" if cpu_flags() & BFLOAT16_CPU_FLAGS else "float32"


def _cnn(keras):
    layers = keras.layers
    computed = {"dtype": compute_dtype()}

    def conv(filters: int, *, normalized: bool) -> list:
        if not normalized:
            return [layers.Conv2D(filters, 3, padding="same", activation="relu", **computed)]
        return [
            layers.Conv2D(filters, 3, padding="same", use_bias=False, **computed),
            layers.BatchNormalization(**computed),
            layers.ReLU(**computed),
        ]

    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE)),
            layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1)),
            # Augmentation, active in training only (identity when scoring): garments mirrored
            # left-right, and a random patch erased in some images (the network must not rely
            # on any one part of a garment). Seeded by keras.utils.set_random_seed: reproducible.
            layers.RandomFlip("horizontal"),
            layers.RandomErasing(factor=ERASING_FACTOR, scale=(0.02, 0.2), fill_value=0.0, value_range=(0, 1)),
            # Batch normalization only at 7x7: at 28x28 and 14x14 it cost a third of each step on
            # the CPU and the network trains as well without it there (docs/benchmarks.md).
            *conv(32, normalized=False),
            layers.MaxPooling2D(**computed),  # 28x28 -> 14x14
            *conv(64, normalized=False),
            layers.MaxPooling2D(**computed),  # -> 7x7
            *conv(128, normalized=True),
            *conv(128, normalized=True),
            layers.MaxPooling2D(**computed),  # -> 3x3
            layers.Flatten(**computed),
            layers.Dropout(0.3, **computed),  # the dense head over-fits without it
            layers.Dense(128, activation="relu", **computed),
            layers.Dense(NUM_CLASSES),
        ],
        name="cnn",
    )

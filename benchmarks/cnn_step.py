"""Where the CNN's training time goes: one epoch of the committed network beside variants of it.

    .venv/bin/python -m benchmarks.cnn_step [--source DIR] [--images 12800] [--rounds 2]

Each variant is the network `build_model("cnn")` builds (same layers, weights drawn from the same
seed, Adam, batch 128, 64 steps per call) with one thing changed:

- committed: every layer but the logits in this CPU's `compute_dtype()` (`mixed_bfloat16` where
  the CPU computes bfloat16 natively, float32 elsewhere), batch normalization in the 7x7 block only;
- mixed_bfloat16: every layer but the logits in `mixed_bfloat16`, whatever the CPU;
- bfloat16 convolutions only: the other layers in float32;
- float32: every layer in float32;
- batch norm everywhere: every convolution followed by batch normalization, as at 7x7;
- XLA: the committed layers compiled with `jit_compile=True`.

The rebuilt variants (all but the first) are compiled like the job compiles, with Adam at the
recipe's peak rate held constant (no cosine decay: it changes nothing in the time of a step).

Timed: `model.fit` over the first `--images` training images, one epoch, after a warm-up epoch
on 1,280 images (tracing); the fastest of `--rounds` alternating rounds counts. Prints seconds
and each variant's ratio to the committed network.
"""

import argparse
import time

import numpy as np

from components.constants import DEFAULT_SOURCE, IDX_FILES
from components.io.idx import load_split
from components.train.models import RECIPES, STEPS_PER_EXECUTION, build_model, compute_dtype

BATCH = RECIPES["cnn"].batch_size


def variants(keras) -> dict:
    """name -> a function returning a compiled model."""

    def committed():
        keras.utils.set_random_seed(0)
        return build_model("cnn", learning_rate=RECIPES["cnn"].learning_rate)

    def rebuilt(change_layers, jit_compile: bool = False):
        base = committed()
        model = keras.Sequential([keras.Input(base.input_shape[1:]), *change_layers(base.layers)], name="cnn")
        model.compile(
            optimizer=keras.optimizers.Adam(RECIPES["cnn"].learning_rate),
            loss=base.loss,
            metrics=["accuracy"],
            steps_per_execution=STEPS_PER_EXECUTION,
            jit_compile=jit_compile,
        )
        return model

    def clone(layer, **changes):
        return layer.__class__.from_config({**layer.get_config(), **changes})

    def mixed_bfloat16(layers):
        return [clone(layer, dtype="mixed_bfloat16") for layer in layers[:-1]] + [clone(layers[-1])]

    def bfloat16_convolutions_only(layers):
        return [clone(layer, dtype="mixed_bfloat16" if isinstance(layer, keras.layers.Conv2D) else "float32") for layer in layers]

    def float32(layers):
        return [clone(layer, dtype="float32") for layer in layers]

    def batch_norm_everywhere(layers):
        rebuilt_layers = []
        for layer in layers:
            if isinstance(layer, keras.layers.Conv2D) and layer.get_config()["activation"] == "relu":
                conv = clone(layer, activation="linear", use_bias=False)
                rebuilt_layers += [
                    conv,
                    keras.layers.BatchNormalization(dtype=compute_dtype()),
                    keras.layers.ReLU(dtype=compute_dtype()),
                ]
            else:
                rebuilt_layers.append(clone(layer))
        return rebuilt_layers

    return {
        "committed": committed,
        "mixed_bfloat16": lambda: rebuilt(mixed_bfloat16),
        "bfloat16 convolutions only": lambda: rebuilt(bfloat16_convolutions_only),
        "float32": lambda: rebuilt(float32),
        "batch norm everywhere": lambda: rebuilt(batch_norm_everywhere),
        "XLA (jit_compile)": lambda: rebuilt(lambda layers: [clone(layer) for layer in layers], jit_compile=True),
    }


def epoch_seconds(model, images: np.ndarray, labels: np.ndarray) -> float:
    model.fit(images[:1280], labels[:1280], batch_size=BATCH, epochs=1, verbose=0)  # tracing
    start = time.perf_counter()
    model.fit(images, labels, batch_size=BATCH, epochs=1, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="the data set's IDX files")
    parser.add_argument("--images", type=int, default=12_800)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import keras

    images, labels = load_split(args.source, *IDX_FILES["train"])
    images, labels = (images.array[: args.images] / 255.0).astype(np.float32), labels.array[: args.images]
    builders = variants(keras)
    seconds = {name: [] for name in builders}
    for _ in range(args.rounds):
        for name, build in builders.items():
            seconds[name].append(epoch_seconds(build(), images, labels))
    committed = min(seconds["committed"])
    print(f"one epoch of {args.images:,} images, batch {BATCH}, fastest of {args.rounds}")
    for name, runs in seconds.items():
        print(f"{name:<28} {min(runs):7.2f} s   {min(runs) / committed:5.2f}x   (rounds: {', '.join(f'{r:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()

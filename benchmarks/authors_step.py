"""The authors' training step, timed: run by a Python that has TensorFlow, never imported by ours.

`benchmarks.authors_tf` starts this file with the TensorFlow interpreter it was given; it imports the authors'
`model.py` and `config.py` from their checkout (minhnhatvt/glamor-net, unchanged), builds their GLAMOR-Net and
times the step their `train.py` takes (forward under `tf.GradientTape`, sparse cross-entropy, SGD with momentum
0.9 at their learning rate), either eagerly as their loop runs it or under `tf.function`. Its inputs are random
tensors of their sizes (face 96×96, context 112×112, NHWC, float32 in [0, 1]) already in memory (the model's cost
alone), or with `--images ROOT` batches from their own `tf.data` pipeline (`data_utils.get_train_dataset`: PNG
decoding, face crop, masking, resizing, augmentation) over the training images of one of our data roots, laid
out as their code reads them (images/train/<class>/*.png linked, crop/train/<class>/*.txt boxes written) in a
temporary folder. Prints one JSON object: images/s of each timed repeat.

    /path/to/tf/python benchmarks/authors_step.py --repo PATH --batch 32 --mode function --steps 20 --repeats 3
    /path/to/tf/python benchmarks/authors_step.py --repo PATH --batch 4 --mode function --steps 80 --images ROOT
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def their_layout(root: Path, into: Path) -> Path:
    """Our data root's training images as their code reads them: a folder holding data/NCAER-S/images/train and
    data/NCAER-S/crop/train (their config's paths), images linked, one `x1,y1,x2,y2` file per image."""
    base = into / "data" / "NCAER-S"
    with open(root / "faces.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] != "train":
                continue
            rel = Path(row["path"])
            image = base / "images" / "train" / row["label"] / rel.name
            box = base / "crop" / "train" / row["label"] / (rel.stem + ".txt")
            image.parent.mkdir(parents=True, exist_ok=True)
            box.parent.mkdir(parents=True, exist_ok=True)
            image.symlink_to((root / rel).resolve())
            box.write_text(",".join(row[k] for k in ("x1", "y1", "x2", "y2")))
    return into


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True, help="the authors' checkout (holds model.py and config.py)")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--mode", choices=("function", "eager"), required=True)
    p.add_argument("--steps", type=int, required=True, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra- and inter-op threads (0: its own)")
    p.add_argument("--images", type=Path, default=None, help="feed their tf.data pipeline from this data root")
    a = p.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    sys.path.insert(0, a.repo)
    from config import config  # the authors' files
    from model import get_model

    tf.random.set_seed(0)
    model = get_model()
    optimizer = tf.keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    if a.images is None:
        fixed = (
            tf.random.uniform([a.batch, *config.context_input_size, 3]),
            tf.random.uniform([a.batch, *config.face_input_size, 3]),
            tf.random.uniform([a.batch], maxval=config.num_classes, dtype=tf.int32),
        )
        batches = iter(lambda: fixed, None)
    else:
        from data_utils import get_train_dataset  # their pipeline, which reads the paths of their config

        layout = tempfile.TemporaryDirectory(prefix="authors-layout-")  # removed when this process ends
        os.chdir(their_layout(a.images.resolve(), Path(layout.name)))
        config.batch_size = a.batch
        batches = iter(get_train_dataset().repeat())

    def step(context, face, target):
        with tf.GradientTape() as tape:
            loss = loss_fn(target, model(face, context, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, model.trainable_variables, strict=True) if g is not None]
        )
        return loss

    run = tf.function(step) if a.mode == "function" else step
    for _ in range(a.warmup):
        run(*next(batches)).numpy()
    samples = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = run(*next(batches))
        loss.numpy()  # the last step's result in hand: every step done
        samples.append(a.steps * a.batch / (time.perf_counter() - t0))
    print(json.dumps({"tensorflow": tf.__version__, "samples": samples}))
    if a.images is not None:
        os.chdir(a.repo)  # out of the layout, so that it can be removed
        layout.cleanup()


if __name__ == "__main__":
    main()

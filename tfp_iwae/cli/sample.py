"""PNG grids of samples and reconstructions from a trained run.

    tfp-iwae-sample --logdir=runs/default --out=samples.png

(`python launch/sample.py` in a checkout is the same command; every flag: docs/cli.md.)
The reconstructions need the run's test images; without them (a run copied to a machine
without its data) the PNG holds the samples only.
"""

import os
import sys

from absl import flags
import numpy as np
import tensorflow as tf

from tfp_iwae import data
from tfp_iwae.cli import common
from tfp_iwae.summaries import image_grid as grid  # the TensorBoard grids' tiling

F = flags.FLAGS


def define_flags(flag_values=F):
    """This command's flags."""
    fv = flag_values
    common.define_run_flags(fv)
    flags.DEFINE_string("out", None, "PNG path (default: <logdir>/samples.png).",
                        flag_values=fv)
    flags.DEFINE_integer("rows", 8, "Grid rows (samples: rows x rows; reconstructions: rows "
                         "rows of ceil(rows / 2) data | reconstruction pairs).",
                         flag_values=fv)
    flags.DEFINE_bool("mean", True, "Show E[x|z] (Bernoulli means) instead of binary "
                      "samples.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)


def pairs_per_row(rows):
    """Data | reconstruction pairs in each of the `rows` rows: ceil(rows / 2), so the pair
    grid is `rows` rows of 2 * ceil(rows / 2) tiles (as wide as the sample grid when
    `rows` is even, one tile wider when it is odd)."""
    return (rows + 1) // 2


def main(argv):
    common.quiet_absl()
    common.check_flags([("rows", F.rows, common.COUNT, "an integer >= 1"),
                        ("seed", F.seed, common.COUNT_OR_ZERO, "an integer >= 0")])
    config, model, path, _ = common.restore_run(F.logdir, F.checkpoint)
    n = F.rows * F.rows
    samples = model.sample(n, seed=F.seed, mean=F.mean).numpy()
    try:
        test = data.load_array(config.dataset, "test", data_dir=config.data_dir,
                               download=False,
                               allow_nonstandard=config.allow_nonstandard_data)
    except data.DataError as e:  # e.g. a run copied to a machine without its data
        print(f"note: no reconstructions, the test images cannot be read here "
              f"({common.error_message(e)})", file=sys.stderr)
        picture = grid(samples, F.rows, F.rows)
        what = f"{n} samples"
    else:
        # Evenly spaced test images: splits stored sorted by class show every class.
        per_row = pairs_per_row(F.rows)
        x = test[np.linspace(0, len(test) - 1, F.rows * per_row).astype(int)]
        recon = model.reconstruct(tf.constant(x), seed=F.seed).numpy()
        pairs = np.stack([x, recon], 1).reshape(-1, x.shape[-1])
        sep = np.ones([F.rows * 28, 28])
        picture = np.concatenate([grid(samples, F.rows, F.rows), sep,
                                  grid(pairs, F.rows, 2 * per_row)], axis=1)
        what = f"left {n} samples, right data|reconstruction pairs"
    out = F.out or os.path.join(F.logdir, "samples.png")
    png = tf.io.encode_png(tf.cast(np.round(picture[..., None] * 255), tf.uint8))
    try:
        tf.io.write_file(out, png)
    except tf.errors.OpError as e:
        common.fail(f"--out: cannot write {out!r}: {e}")
    print(f"wrote {out} from {path}: {what}")


"""How much memory a run's training step needs, and how much the machine has.

Every network that runs on the importance samples (the decoder, and for two stochastic
layers also q(h2|h1)) holds `[k * batch, width]` activations for each of its layers, plus
the `[k * batch, input_dim]` per-pixel log-likelihood: `per_sample_floats` adds up those
widths. The training step keeps them for the backward pass and adds their gradients and
temporaries; measured peak growth on CPU (float32) is 1.1-1.4x the summed widths under XLA
and ~1.9x without, so the estimate takes 1.5x and 2.5x. Validation computes log weights
for up to 100 images at the training k in one forward pass (1x).
"""

import os

from tfp_iwae import model as model_lib

__all__ = ["per_sample_floats", "training_step_bytes", "validation_bytes",
           "available_bytes", "check_fits"]

BYTES_PER_FLOAT = 4
STEP_OVERHEAD = {True: 1.5, False: 2.5}  # keyed by XLA on/off
VALIDATION_IMAGES = 100  # evaluation.validate: log weights of the first 100 images


def per_sample_floats(stochastic_layers, input_dim=784):
    """Floats held per importance sample (one row of the `[k * batch, .]` tensors) in one
    forward pass of the paper's architecture with `stochastic_layers` layers."""
    latents, hidden = model_lib.paper_architecture(stochastic_layers)
    floats = sum(latents)                              # the samples z (h1, h2)
    floats += sum(hidden[0]) + 2 * input_dim           # p(x|h1): MLP, logits, log p per pixel
    if stochastic_layers == 2:
        floats += sum(hidden[1]) + 2 * latents[0]      # p(h1|h2): MLP, loc and scale
        floats += sum(hidden[1]) + 2 * latents[1]      # q(h2|h1) runs on the samples of h1
    return floats


def training_step_bytes(num_samples, batch_size, stochastic_layers, xla=True):
    """Estimated peak memory (bytes) of one training step at k = `num_samples`."""
    rows = num_samples * batch_size
    return int(rows * per_sample_floats(stochastic_layers) * BYTES_PER_FLOAT
               * STEP_OVERHEAD[bool(xla)])


def validation_bytes(num_samples, images, stochastic_layers):
    """Estimated memory (bytes) of the forward pass over `images` images at k samples."""
    return int(num_samples * images * per_sample_floats(stochastic_layers) * BYTES_PER_FLOAT)


def _meminfo_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _cgroup_available():
    """Room left under a cgroup v2 memory limit (containers), or None without a limit."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as f:
            return max(int(limit) - int(f.read().strip()), 0)
    except (OSError, ValueError):
        return None


def available_bytes():
    """Memory this process can still take (bytes): the machine's MemAvailable, lowered to
    the room under a container memory limit; None where neither can be read."""
    found = [b for b in (_meminfo_available(), _cgroup_available()) if b is not None]
    return min(found) if found else None


def _gib(n):
    return f"{n / 2 ** 30:.1f} GiB"


def check_fits(num_samples, batch_size, stochastic_layers, xla=True, validation_images=0,
               available=None):
    """None if the step (and validation, for `validation_images` > 0) fit in `available`
    bytes (default: `available_bytes()`); else a message naming the settings to change, as
    a training run's arguments (`num_samples=`, `batch_size=`, `eval_images=`,
    `eval_every=`: `RunConfig` fields)."""
    available = available_bytes() if available is None else available
    if available is None:
        return None
    step = training_step_bytes(num_samples, batch_size, stochastic_layers, xla)
    images = min(validation_images, VALIDATION_IMAGES)
    valid = validation_bytes(num_samples, images, stochastic_layers) if images else 0
    if max(step, valid) <= available:
        return None
    parts = [f"the training step needs about {_gib(step)} ({num_samples * batch_size:,} "
             f"importance samples of {per_sample_floats(stochastic_layers):,} floats, "
             f"{STEP_OVERHEAD[bool(xla)]}x for the backward pass)"]
    if images:
        parts.append(f"validation about {_gib(valid)} (log weights of {images} images at "
                     f"k={num_samples})")
    fix = "lower num_samples= or batch_size="
    if valid > available >= step:
        fix = "lower num_samples= or eval_images=, or set eval_every=0"
    return (f"num_samples={num_samples} with batch_size={batch_size}: "
            + " and ".join(parts) + f", but only {_gib(available)} of memory is available; "
            + fix + ".")

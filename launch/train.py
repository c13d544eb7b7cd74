"""Train an IWAE or VAE: `tfp-iwae-train` run from a checkout.

    python launch/train.py --helpfull     # every flag; docs/cli.md describes them

The code is `tfp_iwae.cli.train` of the installed package (`pip install -e .`).
"""

from tfp_iwae.cli import train_main

if __name__ == "__main__":
    train_main()

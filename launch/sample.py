"""PNG grids of samples and reconstructions from a trained run: `tfp-iwae-sample` run from a checkout.

    python launch/sample.py --helpfull     # every flag; docs/cli.md describes them

The code is `tfp_iwae.cli.sample` of the installed package (`pip install -e .`).
"""

from tfp_iwae.cli import sample_main

if __name__ == "__main__":
    sample_main()

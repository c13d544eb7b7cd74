"""Export a trained run as a SavedModel: `tfp-iwae-export` run from a checkout.

    python launch/export.py --helpfull     # every flag; docs/cli.md describes them

The code is `tfp_iwae.cli.export` of the installed package (`pip install -e .`).
"""

from tfp_iwae.cli import export_main

if __name__ == "__main__":
    export_main()

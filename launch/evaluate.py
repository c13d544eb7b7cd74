"""Evaluate a trained run: test L_5000, bits/dim, active units: `tfp-iwae-evaluate` run from a checkout.

    python launch/evaluate.py --helpfull     # every flag; docs/cli.md describes them

The code is `tfp_iwae.cli.evaluate` of the installed package (`pip install -e .`).
"""

from tfp_iwae.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()

"""The one validator of counts and real numbers (`tfp_iwae.checks`), and the error family.

A count is an integer >= a minimum (k >= 1, a number of draws >= 0, repeats >= 2); a
real is a finite number in a range (a learning rate > 0, beta in [0, 1]). Everything
else is refused with `tfp_iwae.ArgumentError` (a ValueError) naming the argument, and
every bad argument of the core library is caught by `except tfp_iwae.Error`.
"""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfp_iwae
from tfp_iwae import (checks, config, diagnostics, estimators, latent_model, model,
                      networks, objectives, seeds)
from tfp_iwae.cli import common


# ---- counts -------------------------------------------------------------------------------
@pytest.mark.parametrize("value,minimum", [(1, 1), (5000, 1), (0, 0), (2, 2),
                                           (np.int64(7), 1), (np.int32(0), 0)])
def test_a_count_at_or_above_its_minimum_comes_back_as_a_python_int(value, minimum):
    got = checks.count(value, "n", minimum=minimum)
    assert got == value and type(got) is int


@pytest.mark.parametrize("bad", [True, False, np.bool_(True), 2.0, 2.5, "3", None, [3],
                                 np.array(3), float("nan")])
def test_a_count_must_be_an_integer_bools_included_are_not(bad):
    # True == 1 in Python, but True is no number of samples.
    with pytest.raises(tfp_iwae.ArgumentError,
                       match=r"^`k` must be a positive Python integer, got "):
        checks.count(bad, "k")


@pytest.mark.parametrize("value,minimum,kind", [(0, 1, "positive"), (-1, 0, "non-negative"),
                                                (1, 2, "")])
def test_a_count_below_its_minimum_names_the_minimum(value, minimum, kind):
    with pytest.raises(tfp_iwae.ArgumentError,
                       match=rf"^`n` must be >= {minimum}, got {value}\.$"):
        checks.count(value, "n", minimum=minimum)
    words = f"a {kind} Python integer" if kind else f"a Python integer >= {minimum}"
    with pytest.raises(tfp_iwae.ArgumentError, match=rf"^`n` must be {words}, got 0\.5\.$"):
        checks.count(0.5, "n", minimum=minimum)


def test_num_samples_is_glossed_as_k_and_a_description_replaces_the_gloss():
    with pytest.raises(ValueError, match=r"^`num_samples` must be >= 1 \(the number of "
                                         r"importance samples k\), got 0\.$"):
        checks.count(0, "num_samples")
    with pytest.raises(ValueError, match=r"^`n` must be >= 0 \(draws\), got -2\.$"):
        checks.count(-2, "n", minimum=0, description="draws")


def test_a_static_tensor_count_is_checked_at_once_and_returned_as_an_int():
    got = checks.count(tf.constant(3), "n", allow_tensor=True)
    assert got == 3 and type(got) is int
    assert checks.count(tf.constant(0, tf.int64), "n", allow_tensor=True, minimum=0) == 0
    with pytest.raises(tfp_iwae.ArgumentError, match=r"^`n` must be >= 1, got 0\.$"):
        checks.count(tf.constant(0), "n", allow_tensor=True)


@pytest.mark.parametrize("bad", [tf.constant(2.), tf.constant([2, 3]), tf.constant(True)])
def test_a_tensor_count_must_be_a_scalar_integer_tensor(bad):
    with pytest.raises(tfp_iwae.ArgumentError,
                       match=r"^`n` must be a positive integer or a scalar integer Tensor"):
        checks.count(bad, "n", allow_tensor=True)


def test_a_tensor_is_no_count_unless_tensors_are_allowed():
    with pytest.raises(tfp_iwae.ArgumentError,
                       match=r"^`n` must be a positive Python integer, got <tf.Tensor"):
        checks.count(tf.constant(3), "n")


def test_a_tensor_count_known_only_at_run_time_is_checked_then():
    # Inside a tf.function traced with an unknown value the count stays a Tensor (int32)
    # and the check is an assertion that runs with the function.
    @tf.function(input_signature=[tf.TensorSpec([], tf.int64)])
    def double(n):
        n = checks.count(n, "n", allow_tensor=True, minimum=2,
                         description="the number of draws")
        assert tf.is_tensor(n) and n.dtype == tf.int32
        return 2 * n

    assert int(double(tf.constant(5, tf.int64))) == 10
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`n` must be >= 2 \(the number of draws\)"):
        double(tf.constant(1, tf.int64))


def test_a_count_from_text_parses_it_and_names_what_it_holds():
    assert checks.count("8", "M", from_text=True) == 8
    with pytest.raises(tfp_iwae.ArgumentError, match=r"^`M` must be an integer, got 'a'\.$"):
        checks.count("a", "M", from_text=True)
    with pytest.raises(tfp_iwae.ArgumentError, match=r"^`M` must be >= 1, got 0\.$"):
        checks.count("0", "M", from_text=True)


def test_a_label_replaces_the_argument_name_and_expected_gives_the_flag_wording():
    # An estimator's parameter: the caller's label, the library's wording.
    with pytest.raises(tfp_iwae.ArgumentError,
                       match=r"^Estimator 'miwae\(0,5\)': M must be >= 1, got 0\.$"):
        checks.count("0", "M", from_text=True, label="Estimator 'miwae(0,5)': M")
    # The command-line wording: "<label>: expected <expected>, got <value!r>." for every
    # refusal, whatever was wrong.
    for bad in (0, 1.5, True):
        with pytest.raises(tfp_iwae.ArgumentError,
                           match=rf"^--rows: expected an integer >= 1, got {bad!r}\.$"):
            checks.count(bad, "rows", label="--rows", expected="an integer >= 1")
    assert (checks.expectation("--x", "one of a, b", "c")
            == "--x: expected one of a, b, got 'c'.")


def test_check_num_samples_is_the_count_check():
    assert objectives.check_num_samples(5) == 5
    assert objectives.check_num_samples(0, "n", minimum=0) == 0
    for bad in (0, True, 2.5):
        with pytest.raises(tfp_iwae.ArgumentError) as ours:
            objectives.check_num_samples(bad)
        with pytest.raises(tfp_iwae.ArgumentError) as same:
            checks.count(bad, "num_samples")
        assert str(ours.value) == str(same.value)


# ---- real numbers -------------------------------------------------------------------------
@pytest.mark.parametrize("value,kwargs", [
    (1e-3, dict(lower=0, lower_open=True)), (0., dict(lower=0, upper=1)),
    (1., dict(lower=0, upper=1)), (0., dict(lower=0, upper=1, upper_open=True)),
    (np.float32(0.5), {}), ("0.05", dict(lower=0, upper=1)), (3, dict(lower=0)),
    (-7.5, dict(upper=0)),
])
def test_a_real_in_its_range_comes_back_as_a_float(value, kwargs):
    got = checks.real(value, "x", **kwargs)
    assert got == float(value) and type(got) is float


@pytest.mark.parametrize("bad,kwargs,words,shown", [
    (float("nan"), {}, "a finite number", "nan"),
    (float("inf"), dict(lower=0), "a finite number >= 0", "inf"),
    (-math.inf, dict(upper=1), "a finite number <= 1", "-inf"),
    (0., dict(lower=0, lower_open=True), "a finite number > 0", "0.0"),
    (1., dict(lower=0, upper=1, upper_open=True), r"a finite number in \[0, 1\)", "1.0"),
    (1.5, dict(lower=0, upper=1), r"a finite number in \[0, 1\]", "1.5"),
    (0., dict(lower=0, upper=1, lower_open=True), r"a finite number in \(0, 1\]", "0.0"),
    (2., dict(upper=2, upper_open=True), "a finite number < 2", "2.0"),
    (True, dict(lower=0), "a finite number >= 0", "True"),
    ("fast", dict(lower=0), "a finite number >= 0", "'fast'"),
    (None, {}, "a finite number", "None"),
])
def test_a_real_must_be_finite_and_in_its_range(bad, kwargs, words, shown):
    with pytest.raises(tfp_iwae.ArgumentError, match=rf"^`x` must be {words}, got {shown}\.$"):
        checks.real(bad, "x", **kwargs)


def test_a_real_takes_a_label_and_the_flag_wording():
    with pytest.raises(tfp_iwae.ArgumentError,
                       match=r"^Estimator 'ciwae\(2\)': beta must be a finite number in "
                             r"\[0, 1\], got 2\.0\.$"):
        checks.real("2", "beta", lower=0, upper=1, label="Estimator 'ciwae(2)': beta")
    with pytest.raises(tfp_iwae.ArgumentError,
                       match=r"^--lr: expected a positive number, got nan\.$"):
        checks.real(float("nan"), "lr", lower=0, lower_open=True, label="--lr",
                    expected="a positive number")


def test_the_checks_load_no_tensorflow():
    # The command-line tools check their flags before TensorFlow is loaded.
    code = ("import sys, tfp_iwae.checks as c; c.count(3, 'n'); c.real(1., 'x'); "
            "assert 'tensorflow' not in sys.modules")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      os.environ.get("PYTHONPATH")])))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---- the callers that word the check their own way ----------------------------------------
@pytest.mark.parametrize("name,match", [
    ("miwae(0,5)", r"^Estimator 'miwae\(0,5\)': M must be >= 1, got 0\.$"),
    ("piwae(2,x)", r"^Estimator 'piwae\(2,x\)': K must be an integer, got 'x'\.$"),
    ("ciwae(nan)", r"^Estimator 'ciwae\(nan\)': beta must be a finite number in \[0, 1\], "
                   r"got nan\.$"),
    ("ciwae(b)", r"^Estimator 'ciwae\(b\)': beta must be a finite number in \[0, 1\], "
                 r"got 'b'\.$"),
])
def test_estimator_parameters_are_checked_by_the_validator(name, match):
    with pytest.raises(tfp_iwae.ArgumentError, match=match):
        estimators.get_estimator(name)
    assert estimators.get_estimator("ciwae(0)").name == "ciwae(0)"


@pytest.mark.parametrize("field,value,match", [
    ("num_samples", 0, r"^--num_samples: expected an integer >= 1, got 0\.$"),
    ("num_samples", 2.5, r"^--num_samples: expected an integer >= 1, got 2\.5\.$"),
    ("batch_size", True, r"^--batch_size: expected an integer >= 1, got True\.$"),
    ("max_steps", -1, r"^--max_steps: expected an integer >= 0 \(0: no cap\), got -1\.$"),
    ("diagnostics_repeats", 1, r"^--diagnostics_repeats: expected an integer >= 2, got 1\.$"),
    ("learning_rate", float("inf"), r"^--learning_rate: expected a positive number "
                                    r"\(finite\), got inf\.$"),
    ("stochastic_layers", 3, r"^--stochastic_layers: expected 1 or 2, got 3\.$"),
])
def test_run_config_words_the_checks_by_flag_and_raises_training_error(field, value, match):
    with pytest.raises(config.TrainingError, match=match):
        config.RunConfig(**{field: value}).validate()


def test_check_flags_reports_every_bad_flag_at_once(capsys):
    with pytest.raises(SystemExit) as e:
        common.check_flags([
            ("rows", 0, common.COUNT, "an integer >= 1"),
            ("seed", -1, common.COUNT_OR_ZERO, "an integer >= 0"),
            ("secs", float("nan"), common.NON_NEGATIVE, "a finite number of seconds >= 0"),
            ("good", 3, common.COUNT, "an integer >= 1"),
            ("half", 2.5, common.COUNT, "an integer >= 1"),
        ])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        "error: --rows: expected an integer >= 1, got 0; --seed: expected an integer >= 0, "
        "got -1; --secs: expected a finite number of seconds >= 0, got nan; --half: "
        "expected an integer >= 1, got 2.5.\n")
    common.check_flags([("rows", 2, common.COUNT, "an integer >= 1"),
                        ("seed", 0, common.COUNT_OR_ZERO, "an integer >= 0")])  # no exit


# ---- every bad argument of the core library is a tfp_iwae.Error -----------------------------
def _iwae():
    return tfp_iwae.IWAE(1, seed=0)


class _NoDecoder:
    prior = encoder = None


def _encoder():
    return keras.Sequential([keras.layers.Dense(4)])


def _decoder():
    return keras.Sequential([keras.layers.Dense(3)])


X = np.zeros([2, 784], np.float32)

BAD_CALLS = [
    # objectives
    ("iwae_bound of int log weights", lambda: tfp_iwae.iwae_bound(tf.constant([[1, 2]])),
     tfp_iwae.ArgumentTypeError),
    ("vae_bound of a scalar", lambda: tfp_iwae.vae_bound(tf.constant(1.)),
     tfp_iwae.ArgumentError),
    ("normalized_weights of bools",
     lambda: tfp_iwae.normalized_weights(np.array([True, False])), tfp_iwae.ArgumentTypeError),
    ("effective_sample_size of no samples",
     lambda: tfp_iwae.effective_sample_size(tf.zeros([0, 3])), tfp_iwae.ArgumentError),
    ("iwae_bound with axis out of range", lambda: tfp_iwae.iwae_bound(tf.zeros([2, 3]), 5),
     tfp_iwae.ArgumentError),
    ("log_weights with num_samples=0", lambda: _iwae().log_weights(X, 0),
     tfp_iwae.ArgumentError),
    ("log_weights with likelihood_block=0",
     lambda: _iwae().log_weights(X, 2, likelihood_block=0), tfp_iwae.ArgumentError),
    ("check_num_samples(True)", lambda: objectives.check_num_samples(True),
     tfp_iwae.ArgumentError),
    # estimators
    ("get_estimator('nope')", lambda: tfp_iwae.get_estimator("nope"), tfp_iwae.ArgumentError),
    ("get_estimator('iwae(3)')", lambda: tfp_iwae.get_estimator("iwae(3)"),
     tfp_iwae.ArgumentError),
    ("get_estimator('miwae(2)')", lambda: tfp_iwae.get_estimator("miwae(2)"),
     tfp_iwae.ArgumentError),
    ("miwae(8,8) at k = 50", lambda: tfp_iwae.get_estimator("miwae(8,8)", 50),
     tfp_iwae.ArgumentError),
    ("estimator_name with a missing value", lambda: estimators.estimator_name("miwae", 2),
     tfp_iwae.ArgumentError),
    # the paper's model
    ("IWAE(0)", lambda: tfp_iwae.IWAE(0), tfp_iwae.ArgumentError),
    ("IWAE(True)", lambda: tfp_iwae.IWAE(True), tfp_iwae.ArgumentError),
    ("IWAE(3) without sizes", lambda: tfp_iwae.IWAE(3), tfp_iwae.ArgumentError),
    ("paper_architecture(3)", lambda: tfp_iwae.paper_architecture(3), tfp_iwae.ArgumentError),
    ("IWAE with one latent size for two layers", lambda: tfp_iwae.IWAE(2, latent_units=[5]),
     tfp_iwae.ArgumentError),
    ("IWAE(likelihood='poisson')", lambda: tfp_iwae.IWAE(1, likelihood="poisson"),
     tfp_iwae.ArgumentError),
    ("IWAE(input_dim=0)", lambda: tfp_iwae.IWAE(1, input_dim=0), tfp_iwae.ArgumentError),
    ("IWAE(std_parameterization='relu')",
     lambda: tfp_iwae.IWAE(1, std_parameterization="relu"), tfp_iwae.ArgumentError),
    ("IWAE with a data_mean of the wrong size",
     lambda: tfp_iwae.IWAE(1, data_mean=np.full(3, 0.5)), tfp_iwae.ArgumentError),
    ("IWAE(seed='a')", lambda: tfp_iwae.IWAE(1, seed="a"), tfp_iwae.ArgumentError),
    ("IWAE.bound(objective='elbo')", lambda: _iwae().bound(X, 2, objective="elbo"),
     tfp_iwae.ArgumentError),
    ("IWAE.log_weights of uint8 images",
     lambda: _iwae().log_weights(np.zeros([2, 784], np.uint8), 2), tfp_iwae.ArgumentError),
    ("IWAE.log_weights of 28x28 images", lambda: _iwae().log_weights(tf.zeros([2, 28, 28]), 2),
     tfp_iwae.ArgumentError),
    ("IWAE.sample(-1)", lambda: _iwae().sample(-1), tfp_iwae.ArgumentError),
    ("IWAE.sample(2.5)", lambda: _iwae().sample(2.5), tfp_iwae.ArgumentError),
    ("IWAE.compile(loss=...)", lambda: _iwae().compile(loss="mse"), tfp_iwae.ArgumentError),
    ("IWAE.compile(num_samples=0)", lambda: _iwae().compile(num_samples=0),
     tfp_iwae.ArgumentError),
    # seeds
    ("stateless_seed('abc')", lambda: seeds.stateless_seed("abc"), tfp_iwae.ArgumentError),
    ("stateless_seed(-1)", lambda: seeds.stateless_seed(-1), tfp_iwae.ArgumentError),
    ("stateless_seed(True)", lambda: seeds.stateless_seed(True), tfp_iwae.ArgumentError),
    ("stateless_seed of a float tensor", lambda: seeds.stateless_seed(tf.constant([1., 2.])),
     tfp_iwae.ArgumentError),
    ("sub_seed(1.5, ...)", lambda: seeds.sub_seed(1.5, 0, 10), tfp_iwae.ArgumentError),
    ("sub_seed index out of range", lambda: seeds.sub_seed(1, 10, 10), tfp_iwae.ArgumentError),
    ("normal with a string seed", lambda: seeds.normal([2], "s"), tfp_iwae.ArgumentError),
    # your own model
    ("LatentVariableModel without networks", lambda: tfp_iwae.LatentVariableModel(3, 4),
     tfp_iwae.ArgumentTypeError),
    ("LatentVariableModel(encoder_head='laplace')",
     lambda: tfp_iwae.LatentVariableModel(_encoder(), _decoder(), encoder_head="laplace"),
     tfp_iwae.ArgumentError),
    ("the default prior before building",
     lambda: tfp_iwae.LatentVariableModel(_encoder(), _decoder()).prior,
     tfp_iwae.ArgumentError),
    ("LatentVariableModel.check_inputs of int images",
     lambda: tfp_iwae.LatentVariableModel(_encoder(), _decoder()).check_inputs(
         np.zeros([2, 3], np.int32)), tfp_iwae.ArgumentError),
    ("LatentVariableModel.check_inputs of strings",
     lambda: tfp_iwae.LatentVariableModel(_encoder(), _decoder()).check_inputs(
         np.array([["a"]])), tfp_iwae.ArgumentError),
    ("a model missing members", lambda: tfp_iwae.check_model(_NoDecoder(), "a tool"),
     tfp_iwae.ArgumentTypeError),
    ("event_shape_of a model without one", lambda: latent_model.event_shape_of(object()),
     tfp_iwae.ArgumentError),
    # the marginal, diagnostics, networks
    ("ImportanceWeightedMarginal(k=0)",
     lambda: tfp_iwae.ImportanceWeightedMarginal(_iwae(), 0), tfp_iwae.ArgumentError),
    ("ImportanceWeightedMarginal of a non-model",
     lambda: tfp_iwae.ImportanceWeightedMarginal(object()), tfp_iwae.ArgumentTypeError),
    ("ImportanceWeightedMarginal(seed=0.5)",
     lambda: tfp_iwae.ImportanceWeightedMarginal(_iwae(), seed=0.5), tfp_iwae.ArgumentError),
    ("gradient_statistics(repeats=1)",
     lambda: diagnostics.gradient_statistics(None, X, repeats=1), tfp_iwae.ArgumentError),
    ("make_gradient_sampler(group='prior')",
     lambda: diagnostics.make_gradient_sampler(_iwae(), "iwae", 2, group="prior"),
     tfp_iwae.ArgumentError),
    ("GaussianLayer(std_parameterization='x')",
     lambda: networks.GaussianLayer([4], 2, std_parameterization="x"), tfp_iwae.ArgumentError),
    ("estimator_gradients with num_samples=0",
     lambda: tfp_iwae.estimator_gradients(
         "iwae", X, prior=None, likelihood_fn=None, posterior_fn=None, encoder_variables=[],
         decoder_variables=[], num_samples=0), tfp_iwae.ArgumentError),
]


@pytest.mark.parametrize("name,call,kind", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_every_bad_argument_is_a_tfp_iwae_error(name, call, kind):
    # `except tfp_iwae.Error` catches it; the built-in base (ValueError / TypeError) that
    # callers may already catch is kept.
    with pytest.raises(tfp_iwae.Error) as e:
        call()
    assert isinstance(e.value, kind), (type(e.value), str(e.value))
    builtin = TypeError if kind is tfp_iwae.ArgumentTypeError else ValueError
    assert isinstance(e.value, builtin)


def test_the_model_module_keeps_its_public_names():
    assert model.IWAE is tfp_iwae.IWAE and model.paper_architecture(1) == ((50,),
                                                                           ((200, 200),))

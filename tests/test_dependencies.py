"""setup.cfg declares every third-party module the code imports (install truth)."""

import ast
import configparser
import importlib.metadata
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _declared(extra=None):
    """Normalised distribution names of setup.cfg's install_requires (or, given `extra`,
    of that entry of extras_require)."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    text = cfg["options.extras_require"][extra] if extra else \
        cfg["options"]["install_requires"]
    names = (re.match(r"[A-Za-z0-9_.\-]+", line.strip()) for line in text.splitlines())
    return {_normalise(m.group(0)) for m in names if m}


def _normalise(dist):
    return re.sub(r"[-_.]+", "-", dist).lower()


def _modules_in(folder):
    return {f[:-3] for f in os.listdir(folder) if f.endswith(".py")}


# Script folders: their modules import each other by name once their folder is on
# sys.path (tests import bench's `evaluate` and experiments' `results` that way).
SCRIPT_MODULES = set().union(*(_modules_in(os.path.join(ROOT, d))
                               for d in ("launch", "tests", "bench", "experiments")))


def _top_level_imports(folder, local=()):
    """{module: first file importing it} of the absolute imports in folder's .py files,
    leaving out modules that are files of the same folder (e.g. tests' `helpers`) or
    named in `local`."""
    local = _modules_in(folder) | set(local)
    found = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        path = os.path.join(folder, name)
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for m in modules:
                top = m.split(".")[0]
                if top not in local:
                    found.setdefault(top, os.path.relpath(path, ROOT))
    return found


def _undeclared(imports, declared, providers):
    """{module: (file, its providers)} of imports whose providers are all undeclared."""
    missing = {}
    for module, where in imports.items():
        if module in sys.stdlib_module_names or module == "tfp_iwae":
            continue
        dists = {_normalise(d) for d in providers.get(module, [])}
        if not dists & declared:
            missing[module] = (where, sorted(dists) or "not installed")
    return missing


@pytest.mark.parametrize("folder,extras", [
    ("tfp_iwae", ()), ("tfp_iwae/cli", ()), ("launch", ()), ("tests", ("test",)),
    ("bench", ("test",)), ("experiments", ("experiments",))])
def test_every_third_party_import_is_declared(folder, extras):
    # A module reached by `import` is the standard library, this package, or installed by
    # a distribution that setup.cfg names: install_requires for the package and its
    # command-line tools (tfp_iwae/cli, launch/), plus the extra that the README's set-up
    # (`.[test]`) or the experiments install for the others. importlib.metadata maps a
    # module to the distributions that provide it; a module that only arrives as another
    # package's dependency (keras through tensorflow) has no declared provider and fails
    # here.
    declared = _declared().union(*(_declared(e) for e in extras))
    missing = _undeclared(_top_level_imports(os.path.join(ROOT, folder), SCRIPT_MODULES),
                          declared, importlib.metadata.packages_distributions())
    assert not missing, f"imported but not declared in setup.cfg: {missing}"


def test_the_check_finds_nested_imports_and_flags_an_undeclared_one(tmp_path):
    # The scan finds absolute imports, nested ones included, and skips relative ones and
    # modules of the same folder; a module whose only provider is not declared (keras,
    # which tensorflow pulls in) is reported, the standard library never is.
    (tmp_path / "a.py").write_text("import os\nimport numpy.linalg\nfrom . import b\n"
                                   "def f():\n    from keras import layers\n")
    (tmp_path / "b.py").write_text("import a\n")
    found = _top_level_imports(str(tmp_path))
    assert set(found) == {"os", "numpy", "keras"}
    providers = {"numpy": ["numpy"], "keras": ["keras"]}
    assert set(_undeclared(found, {"numpy", "tensorflow"}, providers)) == {"keras"}
    assert _undeclared(found, {"numpy", "keras"}, providers) == {}

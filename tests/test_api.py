"""The public namespaces: flat, documented, and free of heavy or hidden imports."""

import inspect
import os
import pathlib
import subprocess
import sys
import typing

import jaxsal
import model_import

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def _public(mod):
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    return [n for n in names if not inspect.ismodule(getattr(mod, n))]


def test_every_public_name_is_documented():
    undocumented = []
    for mod in (jaxsal, model_import):
        for name in _public(mod):
            obj = getattr(mod, name)
            if typing.get_origin(obj) is not None:
                # a type alias (jaxsal.Targets) has no docstring of its own: the README's
                # entry documents it
                if f"{mod.__name__}.{name}" not in README:
                    undocumented.append(f"{mod.__name__}.{name}")
            elif callable(obj) and not (inspect.getdoc(obj) or "").strip():
                undocumented.append(f"{mod.__name__}.{name}")
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_every_public_function_is_annotated():
    # type hints on every parameter and the return value, resolvable at run time (a name an
    # annotation cites but the module does not import fails typing.get_type_hints)
    unannotated = []
    for mod in (jaxsal, model_import):
        for name in _public(mod):
            obj = getattr(mod, name)
            if not inspect.isfunction(obj):
                continue
            sig = inspect.signature(obj)
            missing = [p.name for p in sig.parameters.values()
                       if p.annotation is inspect.Parameter.empty
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if missing or sig.return_annotation is inspect.Signature.empty:
                unannotated.append(f"{mod.__name__}.{name} {missing or 'return'}")
            typing.get_type_hints(obj)
    assert not unannotated, f"public functions without type hints: {unannotated}"


def test_all_lists_every_public_name():
    # `from jaxsal import *` and documentation tools read __all__: it must not miss an export
    for mod in (jaxsal, model_import):
        public = {n for n in dir(mod) if not n.startswith("_")
                  and not inspect.ismodule(getattr(mod, n))}
        assert sorted(mod.__all__) == sorted(public), mod.__name__


def test_contract_names_exist():
    for name in ("saliency", "gradient_x_input", "guided_backprop", "deconvnet", "smoothgrad",
                 "integrated_gradients", "gradcam", "gradcam_plus_plus", "layercam", "hirescam",
                 "xgradcam", "scorecam", "eigencam", "guided_gradcam", "occlusion", "maximize",
                 "eigengradcam", "gradcam_elementwise", "ablationcam",
                 "blur_integrated_gradients", "guided_integrated_gradients", "gradient_shap",
                 "shapley_values", "shapley_value_sampling", "fullgrad", "rise", "deeplift",
                 "deeplift_shap", "lrp", "kernel_shap", "lime", "layer_conductance",
                 "internal_influence", "feature_permutation", "neuron_conductance",
                 "deletion", "insertion", "infidelity", "sensitivity_max",
                 "randomization_test", "rank_correlation",
                 "normalize", "explain_to_file"):
        assert callable(getattr(jaxsal, name)), name
    assert callable(model_import.load_keras)


def test_import_is_light():
    # The engine must not pull in matplotlib, TensorFlow or Keras on import; jaxsal.plot
    # imports matplotlib but not pyplot (which picks a GUI backend). One interpreter for both
    # (it was two, one in tests/test_plot.py: starting one costs seconds).
    code = ("import sys, jaxsal, model_import; "
            "print(','.join(m for m in ('matplotlib', 'tensorflow', 'keras', 'torch') "
            "if m in sys.modules)); "
            "import jaxsal.plot; assert 'matplotlib' in sys.modules; "
            "print('pyplot' if 'matplotlib.pyplot' in sys.modules else '')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["", ""], out.stdout


def test_names_the_docs_and_messages_cite_exist():
    # README, examples, docstrings and error messages cite `jaxsal.X` / `model_import.X`:
    # each must be importable as written (fullgrad's error sent users to a
    # `jaxsal.load_keras` that does not exist)
    import importlib
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    files = [root / "README.md", root / "benchmarks" / "README.md",
             *sorted((root / "examples").glob("*.py")),
             *sorted((root / "examples").glob("*.ipynb"))]
    for pkg in ("jaxsal", "model_import"):
        files += sorted((root / pkg).rglob("*.py"))
    missing = set()
    for f in files:
        for mod, name, attr in re.findall(r"\b(jaxsal|model_import)\.([A-Za-z]\w*)(?:\.(\w+))?",
                                          f.read_text()):
            obj = getattr(importlib.import_module(mod), name, None)
            if obj is None:
                try:
                    obj = importlib.import_module(f"{mod}.{name}")
                except ImportError:
                    missing.add(f"{mod}.{name} ({f.relative_to(root)})")
                    continue
            # a class's or module's attribute: `model_import.Runtime.pairwise`, `jaxsal.plot.grid`
            fields = getattr(obj, "__dataclass_fields__", None) or getattr(obj, "_fields", ())
            if (attr and (inspect.isclass(obj) or inspect.ismodule(obj))
                    and not hasattr(obj, attr) and attr not in fields):
                missing.add(f"{mod}.{name}.{attr} ({f.relative_to(root)})")
    assert not missing, f"cited names that do not exist: {sorted(missing)}"


def test_what_takes_the_inputs_of_a_model_of_several_says_so():
    # a model's forward pass and its helpers, and explain_to_file, take one array or, for a
    # model of several inputs, a list or dict of them: their hints say jaxsal.Inputs (they
    # said ArrayLike, or ArrayLike | Sequence[ArrayLike] without the dict)
    km, fm = model_import.KerasModel, jaxsal.FunctionModel
    for fn, name in ((km.apply, "x"), (km.__call__, "x"), (km.biases, "x"),
                     (km.intermediates, "x"), (km.check_token_ids, "x"), (fm.apply, "x"),
                     (fm.__call__, "x"), (jaxsal.explain_to_file, "inputs")):
        assert typing.get_type_hints(fn)[name] == jaxsal.Inputs, fn.__qualname__

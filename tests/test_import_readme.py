"""The README's `import` section lists exactly the registered converters."""

import pathlib
import re

import model_import
from model_import._layers.tf_ops import supported_tf_functions

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _block():
    s = README.read_text()
    a = s.index("<!-- import-layers:start -->")
    b = s.index("<!-- import-layers:end -->")
    assert s.index("<!-- import:start -->") < a < b < s.index("<!-- import:end -->")
    return s[a:b]


def _names(line_prefix):
    line = next(ln for ln in _block().splitlines() if ln.startswith(line_prefix))
    return re.findall(r"`([^`]+)`", line.split(":", 1)[1])


def test_readme_lists_every_registered_layer_class():
    reg = model_import.registered_classes()
    assert _names("Layer classes") == [c for c in reg if not c.startswith("ops.")]
    ops = [n for n in _names("Keras 3 operations") if not n.startswith(("x + ", "keras."))]
    assert ops == [c[4:] for c in reg if c.startswith("ops.")]


def test_readme_lists_tf_functions_and_activations():
    assert _names("tf.keras `TFOpLambda` functions")[: len(supported_tf_functions())] == \
        supported_tf_functions()
    assert _names("Activation strings") == list(model_import.ACTIVATION_NAMES)


def test_readme_counts_match_its_lists():
    # "Layer classes (159): ..." and "Keras 3 operations ... ; 207): ...": each count stated
    # before a list is the list's length (the lists are checked above, not their counts)
    for line in _block().splitlines():
        head, _, rest = line.partition("):")
        count = re.search(r"[(;] ?(\d+)$", head)
        if count:
            assert int(count.group(1)) == len(re.findall(r"`([^`]+)`", rest)), head

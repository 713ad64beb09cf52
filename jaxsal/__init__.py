"""jaxsal: attribution maps for Keras models in pure JAX.

Public API is flat; implementation lives in ``jaxsal._src``.
"""

from jaxsal._src.batch import explain_to_file
from jaxsal._src.guided import deconvnet_relu, guided_relu, relu_for_mode

# --- attribution methods (jaxsal._src: targets, gradients, cam, ...) ---

# --- activation maximization (jaxsal._src.maximize) ---

# --- post-processing (jaxsal._src.postprocess) ---

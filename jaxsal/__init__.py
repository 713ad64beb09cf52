"""jaxsal: attribution maps for Keras models in pure JAX.

Public API is flat; implementation lives in ``jaxsal._src``.
"""

from jaxsal._src.batch import IncompleteJob, explain_to_file
from jaxsal._src.guided import deconvnet_relu, guided_relu, relu_for_mode

# --- attribution methods (jaxsal._src: targets, gradients, cam, ...) ---
from jaxsal._src.base import (DEFAULT_MEMORY_BUDGET, FunctionModel, Inputs, Maps, ModelLike,
                              clear_caches)
from jaxsal._src.cam import (ablationcam, default_cam_layer, eigencam, eigengradcam, gradcam,
                             gradcam_elementwise, gradcam_plus_plus, guided_gradcam, hirescam,
                             layercam, scorecam, spatial_layers, xgradcam)
from jaxsal._src.gradients import deconvnet, gradient_x_input, guided_backprop, saliency
from jaxsal._src.conductance import internal_influence, layer_conductance, neuron_conductance
from jaxsal._src.deeplift import deeplift, deeplift_shap
from jaxsal._src.finite import NonFiniteMaps
from jaxsal._src.fullgrad import fullgrad
from jaxsal._src.gradient_shap import gradient_shap
from jaxsal._src.integrated import integrated_gradients
from jaxsal._src.lime import kernel_shap, lime
from jaxsal._src.lrp import lrp
from jaxsal._src.lrp_rules import (LRPComposite, LRPRule, lrp_alpha_beta, lrp_composite,
                                  lrp_epsilon, lrp_flat, lrp_gamma, lrp_pass,
                                  lrp_signal_take_all, lrp_uniform, lrp_wsquare, lrp_zbox,
                                  lrp_zplus)
from jaxsal._src.blur_ig import blur_integrated_gradients
from jaxsal._src.guided_ig import guided_integrated_gradients
from jaxsal._src.occlusion import occlusion
from jaxsal._src.segmentation import felzenszwalb, xrai_labels
from jaxsal._src.xrai import segment_masks, xrai, xrai_regions, xrai_segments
from jaxsal._src.permutation import feature_permutation
from jaxsal._src.rise import rise, rise_masks
from jaxsal._src.shapley import shapley_value_sampling, shapley_values
from jaxsal._src.smoothing import smoothgrad
from jaxsal._src.targets import Targets, class_score, neuron

# --- evaluation of maps (jaxsal._src: curves, infidelity, sensitivity) ---
from jaxsal._src.curves import Curves, deletion, insertion
from jaxsal._src.infidelity import infidelity
from jaxsal._src.randomization import randomization_test, rank_correlation
from jaxsal._src.sensitivity import sensitivity_max

# --- activation maximization (jaxsal._src.maximize) ---
from jaxsal._src.features import feature_maps, filter_images, image_grid
from jaxsal._src.maximize import (MaximizeResult, default_parameterization,
                                  default_regularizers, default_transforms, maximize)
from jaxsal._src.objectives import (Diversity, Objective, channel_interpolate,
                                    channel_objective, direction_neuron_objective,
                                    direction_objective, diversity, interpolate_objectives,
                                    neuron_objective, output_objective, stack_objectives)
from jaxsal._src.parameterization import Parameterization, fourier, pixels
from jaxsal._src.regularizers import (Regularizer, blur_every, l2_decay, lp_norm,
                                      total_variation)
from jaxsal._src.transforms import (compose, gaussian_blur, identity, jitter, pad,
                                    random_rotate, random_scale, standard_transforms)

# --- post-processing (jaxsal._src.postprocess) ---
from jaxsal._src.postprocess import clip_percentile, normalize, reduce_channels, resize

__all__ = [
    "Curves",
    "DEFAULT_MEMORY_BUDGET",
    "Diversity",
    "FunctionModel",
    "IncompleteJob",
    "Inputs",
    "LRPComposite",
    "LRPRule",
    "Maps",
    "MaximizeResult",
    "ModelLike",
    "NonFiniteMaps",
    "Objective",
    "Parameterization",
    "Regularizer",
    "Targets",
    "ablationcam",
    "blur_every",
    "blur_integrated_gradients",
    "channel_interpolate",
    "channel_objective",
    "class_score",
    "clear_caches",
    "clip_percentile",
    "compose",
    "deconvnet",
    "deconvnet_relu",
    "deeplift",
    "deeplift_shap",
    "default_cam_layer",
    "default_parameterization",
    "default_regularizers",
    "default_transforms",
    "deletion",
    "direction_neuron_objective",
    "direction_objective",
    "diversity",
    "eigencam",
    "eigengradcam",
    "explain_to_file",
    "feature_maps",
    "feature_permutation",
    "felzenszwalb",
    "filter_images",
    "fourier",
    "fullgrad",
    "gaussian_blur",
    "gradcam",
    "gradcam_elementwise",
    "gradcam_plus_plus",
    "gradient_shap",
    "gradient_x_input",
    "guided_backprop",
    "guided_gradcam",
    "guided_integrated_gradients",
    "guided_relu",
    "hirescam",
    "identity",
    "image_grid",
    "infidelity",
    "insertion",
    "integrated_gradients",
    "internal_influence",
    "interpolate_objectives",
    "jitter",
    "kernel_shap",
    "l2_decay",
    "layer_conductance",
    "layercam",
    "lime",
    "lp_norm",
    "lrp",
    "lrp_alpha_beta",
    "lrp_composite",
    "lrp_epsilon",
    "lrp_flat",
    "lrp_gamma",
    "lrp_pass",
    "lrp_signal_take_all",
    "lrp_uniform",
    "lrp_wsquare",
    "lrp_zbox",
    "lrp_zplus",
    "maximize",
    "neuron",
    "neuron_conductance",
    "neuron_objective",
    "normalize",
    "occlusion",
    "output_objective",
    "pad",
    "pixels",
    "random_rotate",
    "random_scale",
    "reduce_channels",
    "relu_for_mode",
    "resize",
    "randomization_test",
    "rank_correlation",
    "rise",
    "rise_masks",
    "saliency",
    "scorecam",
    "segment_masks",
    "sensitivity_max",
    "shapley_value_sampling",
    "shapley_values",
    "smoothgrad",
    "spatial_layers",
    "stack_objectives",
    "standard_transforms",
    "total_variation",
    "xgradcam",
    "xrai",
    "xrai_labels",
    "xrai_regions",
    "xrai_segments",
]

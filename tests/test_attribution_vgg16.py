"""Every method runs on a VGG16-sized model (keras.applications.VGG16, weights=None, all 13
convolutions and the three dense layers; 32x32 input, the smallest VGG16 takes, to keep CPU
time modest: the file took 32.3 s of CPU time at 64x64, 27.3 s at 32x32, on a 2-core Intel
Xeon VM, lscpu)."""

import jax
import numpy as np
import pytest

import jaxsal
from model_import import load_keras

pytestmark = pytest.mark.slow
S = 32  # the input's height and width


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    keras = pytest.importorskip("keras")
    km = keras.applications.VGG16(weights=None, input_shape=(S, S, 3), classes=20)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.keras"
    km.save(path)
    m = load_keras(path).with_head("logits")
    x = np.random.default_rng(0).uniform(0, 255, size=(2, S, S, 3)).astype(np.float32)
    return m, x


def test_vgg16_every_method(vgg):
    m, x = vgg
    assert jaxsal.default_cam_layer(m) == "block5_conv3"
    t = [3, 11]
    key = jax.random.key(0)
    out = {
        "saliency": jaxsal.saliency(m, x, t),
        "gradient_x_input": jaxsal.gradient_x_input(m, x, t),
        "guided_backprop": jaxsal.guided_backprop(m, x, t),
        "deconvnet": jaxsal.deconvnet(m, x, t),
        "smoothgrad": jaxsal.smoothgrad(m, x, t, key=key, n=2),
        "integrated_gradients": jaxsal.integrated_gradients(m, x, t, steps=3),
        "gradcam": jaxsal.gradcam(m, x, t),
        "gradcam_plus_plus": jaxsal.gradcam_plus_plus(m, x, t),
        "layercam": jaxsal.layercam(m, x, t),
        "hirescam": jaxsal.hirescam(m, x, t),
        "xgradcam": jaxsal.xgradcam(m, x, t),
        "scorecam": jaxsal.scorecam(m, x, t, top_k=4),
        "eigencam": jaxsal.eigencam(m, x, t),
        "eigengradcam": jaxsal.eigengradcam(m, x, t),
        "gradcam_elementwise": jaxsal.gradcam_elementwise(m, x, t),
        "ablationcam": jaxsal.ablationcam(m, x, t),
        "guided_gradcam": jaxsal.guided_gradcam(m, x, t),
        "occlusion": jaxsal.occlusion(m, x, t, patch=S // 2),
    }
    for name, maps in out.items():
        assert maps.shape == (2, 2, S, S), name
        assert np.all(np.isfinite(np.asarray(maps))), name
    cam4 = jaxsal.gradcam(m, x, t, layer="block4_conv3", upsample=False)
    assert cam4.shape == (2, 2, S // 8, S // 8)
    # predicted class, and all classes chunked under a tiny memory budget
    assert jaxsal.saliency(m, x).shape == (2, S, S)
    full = jaxsal.saliency(m, x[:1], list(range(20)), memory_budget=1)
    np.testing.assert_allclose(full[:, [3, 11]], out["saliency"][:1], rtol=1e-4,
                               atol=1e-6 * float(np.abs(full).max()))

"""One-off: the cost of resizing images to XRAI's 224x224 as PAIR does
(``jaxsal._src.segmentation._resize_like_skimage``, scikit-image's ``resize(order=3,
mode="constant", preserve_range=True, anti_aliasing=True)`` in NumPy) against
scikit-image's own.

Eight 299x299x3 images in [-1, 1] (uniform noise, NumPy ``default_rng(0)``; the resize's
cost does not depend on the values). Timed, as medians of 5 calls after a first one (min and
max beside): one image, the eight one after the other, and an enlargement (40x48x3 -> 224).
Without flags also ``xrai_labels`` of the eight (the resize, six segmentations, the labels
resized back), for the resize's share.

``--skimage``: the same resizes with scikit-image's (in a venv that has it; jaxsal is not
imported).

    python -m benchmarks.oneoff.xrai_resize_speed [--skimage]
"""

import sys

import numpy as np

from benchmarks.oneoff.felzenszwalb_speed import show

N, SIZE = 8, (224, 224)


def images():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (N, 299, 299, 3)), rng.uniform(-1, 1, (40, 48, 3))


def main():
    x, small = images()
    if "--skimage" in sys.argv:
        import skimage
        from skimage.transform import resize

        def fn(im):
            return resize(im, SIZE, order=3, mode="constant", preserve_range=True,
                          anti_aliasing=True)
        print("scikit-image", skimage.__version__, flush=True)
        name = "skimage resize"
    else:
        import jaxsal
        from jaxsal._src.segmentation import _resize_like_skimage

        def fn(im):
            return _resize_like_skimage(im, SIZE)
        name = "jaxsal _resize_like_skimage"
    show(f"{name}, 1 image 299x299x3 -> 224x224", lambda: fn(x[0]))
    show(f"{name}, {N} images 299x299x3 -> 224x224", lambda: [fn(im) for im in x])
    show(f"{name}, 1 image 40x48x3 -> 224x224", lambda: fn(small))
    if "--skimage" not in sys.argv:
        show(f"xrai_labels, {N} images 299x299x3", lambda: jaxsal.xrai_labels(x), reps=3)


if __name__ == "__main__":
    main()

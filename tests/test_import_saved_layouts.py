"""Layouts Keras 3 saves a model in besides one ``.keras``/``.h5`` file: an unzipped
``.keras`` directory (``model.save(dir, zipped=False)``, the Hugging Face Hub layout) and
sharded weights (``model.save_weights("m.weights.json", max_shard_size=...)``), compared with
what Keras computes from the same model."""

import json

import jax
import numpy as np
import pytest

from import_helpers import perturb_keras, rel_err
from model_import import KerasImportError, load_keras

keras = pytest.importorskip("keras")


def _small_model():
    L = keras.layers
    inp = keras.Input((6, 6, 2))
    h = L.Conv2D(3, 3, activation="relu")(inp)
    h = L.BatchNormalization()(h)
    out = L.Dense(4, activation="softmax")(L.Flatten()(h))
    model = keras.Model(inp, out)
    perturb_keras(model, seed=5, kernels=True)
    return model


@pytest.fixture(scope="module")
def small():
    model = _small_model()
    x = np.random.default_rng(5).normal(size=(3, 6, 6, 2)).astype("float32")
    return model, x, model.predict(x, verbose=0)


def test_unzipped_keras_directory_loads_like_the_archive(small, tmp_path):
    model, x, ref = small
    d = tmp_path / "saved"
    model.save(d, zipped=False)  # config.json, metadata.json, model.weights.h5
    m = load_keras(d)
    assert rel_err(m(x), ref) < 1e-6
    assert m.keras_version == keras.__version__
    z = load_keras(d, head="logits")
    assert rel_err(z(x), load_keras(tmp_path / "saved").with_head("logits")(x)) == 0.0


def test_directory_without_a_keras_model_is_refused(small, tmp_path):
    model, _, _ = small
    d = tmp_path / "saved"
    model.save(d, zipped=False)
    (d / "model.weights.h5").unlink()
    with pytest.raises(KerasImportError, match="model.weights.h5") as info:
        load_keras(d)
    assert str(d) in str(info.value)


def _shard(model, d, max_gb):
    d.mkdir()
    model.save_weights(d / "m.weights.json", max_shard_size=max_gb)
    return d / "m.weights.json", sorted(p.name for p in d.glob("*.weights.h5"))


def test_sharded_weights_load_with_the_architecture(small, tmp_path):
    model, x, ref = small
    # 7.2e-7 GB (773 bytes): the convolution and batch norm (276 bytes), the Dense kernel
    # (768), its bias (16) each in a shard of its own: one layer's arrays in two shards
    index, shards = _shard(model, tmp_path / "w", 7.2e-7)
    weight_map = json.loads(index.read_text())["weight_map"]
    assert len(shards) >= 3
    assert any(isinstance(v, list) and len(v) > 1 for v in weight_map.values())
    m = load_keras(index, config=model.to_json())
    assert rel_err(m(x), ref) < 1e-6
    with pytest.raises(KerasImportError, match="config=") as info:
        load_keras(index)  # weights only
    assert str(index) in str(info.value)


def test_sharded_weights_load_while_another_load_holds_them(small, tmp_path):
    """Loads of one index at once (threads; a load while an earlier handle is open) failed as
    "corrupt or truncated": the in-memory file that merges the shards had one name per
    index, which HDF5 does not create twice, and its links opened the shards locked for
    writing, which another reader could not open. A load refused after the file was read
    (a bad config=) left it open."""
    import concurrent.futures

    import h5py

    from model_import._files import read_sharded_weights

    model, x, ref = small
    index, _ = _shard(model, tmp_path / "w", 7.2e-7)
    open_files = h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)
    with pytest.raises(KerasImportError, match="not valid JSON") as info:
        load_keras(index, config="{")
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == open_files
    del info
    held = read_sharded_weights(str(index))  # an earlier handle, reading one shard
    links, groups = [], [held]  # Group.visititems_links needs h5py 3.11; the floor is older
    while groups:
        group = groups.pop()
        for name in group:
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                links.append(f"{group.name.rstrip('/')}/{name}")
            elif isinstance(link, h5py.HardLink) and isinstance(group[name], h5py.Group):
                groups.append(group[name])
    array = held[links[0]]
    try:
        assert rel_err(load_keras(index, config=model.to_json())(x), ref) < 1e-6
    finally:
        del array
        held.close()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        loaded = list(pool.map(lambda _: load_keras(index, config=model.to_json()), range(3)))
    for m in loaded:
        for a, b in zip(jax.tree_util.tree_leaves(m.params),
                        jax.tree_util.tree_leaves(loaded[0].params)):
            np.testing.assert_array_equal(a, b)


def test_sharded_weights_open_their_shards_read_only(small, tmp_path):
    """The merged file's external links opened the shards for writing (HDF5 opens them in the
    mode of the file holding the links, made with "w"): read-only shards (a shared folder,
    a read-only mount) were refused to any user but root as "corrupt or truncated", as was
    everyone while the shard was open read-only elsewhere in the process, which shows the
    same as root. Keras loads both."""
    import h5py

    model, x, ref = small
    index, shards = _shard(model, tmp_path / "w", 7.2e-7)
    for name in shards:
        (index.parent / name).chmod(0o444)
    # core driver, as the links open a shard: HDF5 sees the same file open read-only
    with h5py.File(index.parent / shards[0], "r", driver="core", backing_store=False):
        assert rel_err(load_keras(index, config=model.to_json())(x), ref) < 1e-6


def test_sharded_weights_of_a_compiled_model_with_shards_of_optimizer_state_only(tmp_path):
    # A compiled model's weights hold its optimizer's state (Adam: two arrays per weight)
    # after the layers', so the last shards of a trained model hold nothing else; Keras
    # loads them (and ignores that state in load_weights of an uncompiled model)
    import h5py

    model = _small_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # the slots fit() would create
    x = np.random.default_rng(6).normal(size=(3, 6, 6, 2)).astype("float32")
    index, shards = _shard(model, tmp_path / "w", 1e-6)
    tops = []
    for name in shards:
        with h5py.File(index.parent / name, "r") as f:
            tops.append(sorted(f.keys()))
    assert tops[0] == ["layers", "optimizer", "vars"] and ["optimizer"] in tops[1:], tops
    m = load_keras(index, config=model.to_json())
    assert rel_err(m(x), model.predict(x, verbose=0)) < 1e-6


def test_shard_without_the_groups_its_index_lists_is_refused(small, tmp_path):
    model, _, _ = small
    index, shards = _shard(model, tmp_path / "w", 7.2e-7)
    import h5py

    with h5py.File(index.parent / shards[-1], "w") as f:  # another file under a shard's name
        f.create_group("model_weights")
    with pytest.raises(KerasImportError, match=shards[-1] + ".*model_weights"):
        load_keras(index, config=model.to_json())


def test_one_shard_of_several_is_refused_naming_the_index(small, tmp_path):
    model, _, _ = small
    index, shards = _shard(model, tmp_path / "w", 7.2e-7)
    with pytest.raises(KerasImportError, match="m.weights.json"):
        load_keras(index.parent / shards[0], config=model.to_json())


def test_sharded_weights_with_a_missing_shard_are_refused(small, tmp_path):
    model, _, _ = small
    index, shards = _shard(model, tmp_path / "w", 7.2e-7)
    (index.parent / shards[-1]).unlink()
    with pytest.raises(KerasImportError, match=shards[-1]):
        load_keras(index, config=model.to_json())


@pytest.mark.parametrize("kind", ["sequential", "functional"])
@pytest.mark.parametrize("form", ["to_json", "get_config", "serialize"])
def test_weights_file_with_the_architecture_in_any_form_keras_gives(tmp_path, kind, form):
    # model.to_json(), model.get_config() (no class_name: a Sequential's has no
    # input_layers) and keras.saving.serialize_keras_object(model)
    L = keras.layers
    if kind == "sequential":
        model = keras.Sequential([keras.Input((5,)), L.Dense(4, activation="relu"),
                                  L.Dense(3, activation="softmax")])
    else:
        inp = keras.Input((5,))
        model = keras.Model(inp, L.Dense(3, activation="softmax")(L.Dense(4)(inp)))
    perturb_keras(model, seed=1, kernels=True)
    model.save_weights(tmp_path / "m.weights.h5")
    config = {"to_json": model.to_json, "get_config": model.get_config,
              "serialize": lambda: keras.saving.serialize_keras_object(model)}[form]()
    x = np.random.default_rng(1).normal(size=(2, 5)).astype("float32")
    m = load_keras(tmp_path / "m.weights.h5", config=config)
    assert rel_err(m(x), model.predict(x, verbose=0)) < 1e-6


def test_a_zipped_keras_directory_loads(small, tmp_path):
    # the unzipped layout zipped again with its folder (zip -r m.zip saved/): the archive's
    # files sit under one folder
    import zipfile

    model, x, ref = small
    d = tmp_path / "saved"
    model.save(d, zipped=False)
    with zipfile.ZipFile(tmp_path / "m.zip", "w") as z:
        z.writestr("saved/", b"")
        for p in sorted(d.iterdir()):
            if p.is_file():
                z.write(p, f"saved/{p.name}")
    assert rel_err(load_keras(tmp_path / "m.zip")(x), ref) < 1e-6
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:  # two models: which one?
        for folder in ("a", "b"):
            for p in sorted(d.iterdir()):
                if p.is_file():
                    z.write(p, f"{folder}/{p.name}")
    with pytest.raises(KerasImportError, match="config.json"):
        load_keras(tmp_path / "two.zip")


def _loads_as_keras_does(saved, rebuilt, path, seed):
    """Keras's own load_weights of ``path`` into ``rebuilt`` gives ``saved``'s outputs, and
    so does load_keras(path, config=rebuilt's architecture), on (3, 4) inputs."""
    rebuilt.load_weights(path)
    x = np.random.default_rng(seed).normal(size=(3, 4)).astype("float32")
    ref = saved.predict(x, verbose=0)
    assert rel_err(rebuilt.predict(x, verbose=0), ref) == 0.0
    m = load_keras(path, config=rebuilt.to_json())
    assert rel_err(m(x), ref) < 1e-6


def test_weights_with_an_architecture_whose_layer_names_differ(tmp_path):
    # the architecture rebuilt in code, where Keras numbers the names on (a notebook cell run
    # again): Keras 3 loads a .weights.h5 by each layer's position among those of its class,
    # whatever the names, and so does the importer when the names recorded in the file are
    # not the architecture's (here they overlap, shifted by one)
    L = keras.layers

    def build(names):
        return keras.Sequential([keras.Input((4,))] + [L.Dense(4, name=n) for n in names]
                                + [L.BatchNormalization(name=f"bn_{names[0]}")])

    saved = build(["dense", "dense_1", "dense_2"])
    perturb_keras(saved, seed=2, kernels=True)
    saved.save_weights(tmp_path / "m.weights.h5")
    _loads_as_keras_does(saved, build(["dense_1", "dense_2", "dense_3"]),
                         tmp_path / "m.weights.h5", seed=2)


def test_legacy_h5_weights_with_an_architecture_whose_layer_names_differ(tmp_path):
    # Keras loads a legacy .h5's weights into a model by the order of its layers with
    # weights (load_weights' by_name=False), whatever their names: so does the importer when
    # the file's layer names are not the architecture's
    L = keras.layers

    def build(names):
        inp = keras.Input((4,))
        h = L.Dense(4, name=names[0])(inp)
        h = L.BatchNormalization(name=names[1])(L.Dropout(0.1, name=names[2])(h))
        return keras.Model(inp, L.Dense(3, activation="softmax", name=names[3])(h))

    saved = build(["dense", "batch_normalization", "dropout", "dense_1"])
    perturb_keras(saved, seed=3, kernels=True)
    saved.save(tmp_path / "m.h5")
    _loads_as_keras_does(saved, build(["dense_2", "batch_normalization_1", "dropout_1",
                                       "dense_3"]), tmp_path / "m.h5", seed=3)
    # another architecture (one Dense fewer) is still refused
    other = keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense_9")])
    with pytest.raises(KerasImportError, match="dense_9"):
        load_keras(tmp_path / "m.h5", config=other.to_json())


def test_weights_saved_as_npz_are_refused_naming_the_format(small, tmp_path):
    # Keras 3's private saving_lib.save_model(..., weights_format="npz") (model.save has no
    # such argument) stores pickled Keras variables in model.weights.npz, which Keras >= 3.9
    # refuses to unpickle as well; its unzipped form writes the .npz as model.weights.h5
    import zipfile

    from keras.src.saving import saving_lib

    model, _, _ = small
    saving_lib.save_model(model, tmp_path / "m.keras", weights_format="npz")
    assert "model.weights.npz" in zipfile.ZipFile(tmp_path / "m.keras").namelist()
    if tuple(int(v) for v in keras.__version__.split(".")[:2]) >= (3, 9):
        with pytest.raises(ValueError, match="allow_pickle"):
            keras.saving.load_model(tmp_path / "m.keras")
    saving_lib.save_model(model, tmp_path / "d", weights_format="npz", zipped=False)
    zipfile.ZipFile(tmp_path / "m.keras").extractall(tmp_path / "unzipped")
    for path in (tmp_path / "m.keras", tmp_path / "d", tmp_path / "unzipped"):
        with pytest.raises(KerasImportError, match="weights_format='npz'") as info:
            load_keras(path)
        msg = str(info.value)
        assert ".npz" in msg and "model.save('model.keras')" in msg
        assert ("No Keras reads this directory" if path.name == "d" else "3.9") in msg

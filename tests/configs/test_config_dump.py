"""A run's dumped config (``work_dirs/RUN/CONFIG.py``, what ``tools/test.py`` and ``mim test`` are
given after training) must build the same pipelines as the config it was dumped from.

mmengine's pure-Python configs hold every name imported outside ``read_base`` as a lazy import, and
``Config.dump`` writes one as its dotted path. For a class or function that path is resolved again
by the registry; for any other value (a tuple of meta keys, say) it stays a string. The pack step
of every config once packed ``meta_keys='bev_deform...PACK_META_KEYS'``, i.e. its characters, so a
dumped config's test failed with "batch_input_metas need 'lidar2img'"."""

from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.config.lazy import LazyAttr, LazyObject
from mmengine.registry import DefaultScope

from bev_deform.datasets.transforms import PACK_META_KEYS, PackMultiViewInputs
from bev_deform.registry import TRANSFORMS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(
    str(p.relative_to(REPO)) for p in [*REPO.glob("configs/*/*.py"), *REPO.glob("projects/*/configs/*.py")]
)


def lazy_values(node, path=""):
    """(path, lazy import) of every lazily imported value in a raw config tree (no resolution)."""
    if isinstance(node, (LazyObject, LazyAttr)):
        yield path, node
    elif isinstance(node, dict):
        for key, value in dict.items(node):  # dict's own items: ConfigDict's would resolve them
            yield from lazy_values(value, f"{path}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from lazy_values(value, f"{path}[{i}]")


def test_every_config_is_found():
    assert len(CONFIGS) >= 12
    assert "configs/deform_detr3d/deform_detr3d_r18_fpn_1xb2-cpu_synth-400x224.py" in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_import_only_classes_and_functions_which_a_dump_can_restore(name):
    cfg = Config.fromfile(str(REPO / name))
    values = [(path, lazy.build()) for path, lazy in lazy_values(cfg._cfg_dict)]
    assert values, "the walk found no lazy import at all (every config names its classes by import)"
    bad = [(path, type(obj).__name__) for path, obj in values if not callable(obj)]
    assert bad == [], f"{name}: imported values that Config.dump would write as strings: {bad}"


def test_a_dumped_config_packs_lidar2img_and_the_temporal_keys(tmp_path):
    temporal = "configs/bevformer/bevformer_r18_fpn_1xb2-cpu_synth-400x224-temporal.py"
    cfg = Config.fromfile(str(REPO / temporal))
    cfg.dump(str(tmp_path / "dumped.py"))
    dumped = Config.fromfile(str(tmp_path / "dumped.py"))
    with DefaultScope.overwrite_default_scope("bev_deform"):
        for loader in ("train_dataloader", "test_dataloader"):
            pack = TRANSFORMS.build(dumped[loader].dataset.pipeline[-1])
            assert isinstance(pack, PackMultiViewInputs)
            assert pack.meta_keys == PACK_META_KEYS
            read_by_the_models = {"lidar2img", "img_shape", "scene_token", "timestamp", "lidar2global"}
            assert read_by_the_models <= set(pack.meta_keys)


def test_meta_keys_given_as_one_string_raise_naming_it():
    message = "meta_keys must be a sequence of key names, got the string 'lidar2img'"
    with pytest.raises(ValueError, match=message):
        PackMultiViewInputs(keys=["img"], meta_keys="lidar2img")

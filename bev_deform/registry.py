"""bev_deform's registries: children of mmdet3d's, so that under ``default_scope='bev_deform'``
a config finds our modules first, then mmdet3d's and mmengine's, and mmdet's with the
``mmdet.`` prefix. ``locations`` imports our modules, and the mmdet3d modules registered in the parents, on
first use (a child registry does not trigger its parents' imports)."""

from mmdet3d.registry import DATASETS as MMDET3D_DATASETS
from mmdet3d.registry import HOOKS as MMDET3D_HOOKS
from mmdet3d.registry import METRICS as MMDET3D_METRICS
from mmdet3d.registry import MODELS as MMDET3D_MODELS
from mmdet3d.registry import TASK_UTILS as MMDET3D_TASK_UTILS
from mmdet3d.registry import TRANSFORMS as MMDET3D_TRANSFORMS
from mmdet3d.registry import VISUALIZERS as MMDET3D_VISUALIZERS
from mmengine.registry import Registry

SCOPE = "bev_deform"

MODELS = Registry(
    "model", parent=MMDET3D_MODELS, scope=SCOPE, locations=["bev_deform.models", "mmdet3d.models"]
)
TASK_UTILS = Registry(
    "task util",
    parent=MMDET3D_TASK_UTILS,
    scope=SCOPE,
    locations=["bev_deform.models.task_modules", "mmdet3d.models"],
)
TRANSFORMS = Registry(
    "transform",
    parent=MMDET3D_TRANSFORMS,
    scope=SCOPE,
    locations=["bev_deform.datasets.transforms", "mmdet3d.datasets.transforms"],
)
DATASETS = Registry(
    "dataset", parent=MMDET3D_DATASETS, scope=SCOPE, locations=["bev_deform.datasets", "mmdet3d.datasets"]
)
METRICS = Registry(
    "metric", parent=MMDET3D_METRICS, scope=SCOPE, locations=["bev_deform.evaluation", "mmdet3d.evaluation"]
)
VISUALIZERS = Registry(
    "visualizer",
    parent=MMDET3D_VISUALIZERS,
    scope=SCOPE,
    locations=["bev_deform.visualization", "mmdet3d.visualization"],
)
HOOKS = Registry(
    "hook", parent=MMDET3D_HOOKS, scope=SCOPE, locations=["bev_deform.visualization", "mmdet3d.engine.hooks"]
)

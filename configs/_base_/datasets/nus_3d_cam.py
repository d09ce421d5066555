"""Real nuScenes (v1.0-trainval at data/nuscenes), six cameras, for multi-camera 3D detection.

Infos: mmdet3d v2 ``nuscenes_infos_{train,val}.pkl`` in ``data_root`` (``python tools/create_data.py``);
for the test server also ``nuscenes_infos_test.pkl`` of v1.0-test (``test_split`` below).
Images: 1600x900 -> resized by ``img_scale`` and cropped to ``input_size`` (the crop keeps the
bottom of the image); ``lidar2img`` follows every resize/crop (``MultiViewResizeCrop``).
Normalisation and padding are the model's ``data_preprocessor`` (``img_data_preprocessor``
below, mmdet3d's ``Det3DDataPreprocessor``), GridMask is the model's ``grid_mask`` (``grid_mask``
below): both run on the batch's device. The normalisation is the one torchvision's ImageNet
weights expect (RGB, ImageNet mean/std); a config that starts from caffe-style weights (FCOS3D)
restates it.

Test server: ``test_split`` names the v1.0-test info file. ``tools/test.py CONFIG CKPT
--format-only --out-dir D`` runs the config's test dataloader and evaluator on it and writes the
submission ``D/pred_instances_3d/results_nusc.json`` (with ``input_modality`` as its ``meta``)
instead of evaluating.
"""

from mmdet3d.datasets.transforms import (
    LoadAnnotations3D,
    MultiViewWrapper,
    ObjectNameFilter,
    ObjectRangeFilter,
    PhotoMetricDistortion3D,
)
from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor
from mmengine.dataset.sampler import DefaultSampler

from bev_deform.datasets.nuscenes_dataset import BevNuScenesDataset
from bev_deform.datasets.transforms import LoadMultiViewImages, MultiViewResizeCrop, PackMultiViewInputs
from bev_deform.evaluation.nuscenes_metric import BevNuScenesMetric
from bev_deform.models.layers.grid_mask import GridMask

data_root = "data/nuscenes/"
version = "v1.0-trainval"
class_names = [
    "car",
    "truck",
    "trailer",
    "bus",
    "construction_vehicle",
    "bicycle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "barrier",
]
metainfo = dict(classes=class_names, version=version)
point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
# the dataset's modality and the submission's ``meta`` block (the devkit's five keys): cameras only,
# no map, no external data (ImageNet pre-training is allowed in the vision track)
input_modality = dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False, use_external=False)
backend_args = None
cameras = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"]
data_prefix = dict(
    pts="samples/LIDAR_TOP", sweeps="sweeps/LIDAR_TOP", **{cam: f"samples/{cam}" for cam in cameras}
)

img_scale = 0.5  # 1600x900 -> 800x450
input_size = (448, 800)  # (H, W) after the crop; a multiple of 32
train_scale_range = (0.5, 0.56)  # random resize in training, around img_scale

# for the model config: model = dict(..., data_preprocessor=img_data_preprocessor, grid_mask=grid_mask);
# images are loaded BGR, torchvision's ImageNet weights expect RGB with this mean and std
img_data_preprocessor = dict(
    type=Det3DDataPreprocessor,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=32,
)
grid_mask = dict(type=GridMask, use_h=True, use_w=True, ratio=0.5, rotate_deg=0.0, mode=1, prob=0.7)

train_pipeline = [
    dict(type=LoadMultiViewImages, to_float32=False, cameras=cameras, backend_args=backend_args),
    dict(type=LoadAnnotations3D, with_bbox_3d=True, with_label_3d=True, with_attr_label=False),
    dict(type=MultiViewResizeCrop, final_size=input_size, scale_range=train_scale_range, flip=False),
    dict(
        type=MultiViewWrapper,
        transforms=[dict(type=PhotoMetricDistortion3D)],
        override_aug_config=False,  # an independent draw per camera
        process_fields=["img"],
        collected_keys=[],
        randomness_keys=[],
    ),
    dict(type=ObjectRangeFilter, point_cloud_range=point_cloud_range),
    dict(type=ObjectNameFilter, classes=class_names),
    # PackMultiViewInputs: mmdet3d's Pack3DDetInputs plus the scene, time and pose keys (a meta_keys
    # constant here would be dumped into the work dir's config as a string and pack nothing)
    dict(type=PackMultiViewInputs, keys=["img", "gt_bboxes_3d", "gt_labels_3d"]),
]
test_pipeline = [
    dict(type=LoadMultiViewImages, to_float32=False, cameras=cameras, backend_args=backend_args),
    dict(type=MultiViewResizeCrop, final_size=input_size, scale_range=(img_scale, img_scale), test_mode=True),
    dict(type=PackMultiViewInputs, keys=["img"]),  # + scene, time, pose
]

_dataset = dict(
    type=BevNuScenesDataset,
    data_root=data_root,
    cameras=cameras,
    data_prefix=data_prefix,
    modality=input_modality,
    metainfo=metainfo,
    box_type_3d="LiDAR",
    backend_args=backend_args,
)
train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type=DefaultSampler, shuffle=True),
    dataset=dict(
        **_dataset,
        ann_file="nuscenes_infos_train.pkl",
        pipeline=train_pipeline,
        test_mode=False,
        use_valid_flag=True,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type=DefaultSampler, shuffle=False),
    dataset=dict(**_dataset, ann_file="nuscenes_infos_val.pkl", pipeline=test_pipeline, test_mode=True),
)
test_dataloader = val_dataloader

val_evaluator = dict(
    type=BevNuScenesMetric,
    data_root=data_root,
    ann_file=data_root + "nuscenes_infos_val.pkl",
    version=version,
    metric="bbox",
    modality=input_modality,
    backend_args=backend_args,
)
test_evaluator = val_evaluator

# the test split (no annotations): `tools/test.py CONFIG CKPT --format-only --out-dir D` points the
# test dataloader and evaluator here and writes the submission instead of evaluating
test_split = dict(ann_file="nuscenes_infos_test.pkl", version="v1.0-test")

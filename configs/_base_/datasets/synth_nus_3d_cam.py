"""Synthetic nuScenes (``python tools/create_data.py synthetic``, v1.0-mini format at
data/nuscenes-synth), six cameras, for the demo and quick experiments on CPU.

The real nuScenes config (``nus_3d_cam``) with what differs: the root, the version (v1.0-mini,
evaluated on the devkit's mini_val split), the image size (the 'learn' preset renders 400x225;
the crop keeps the bottom 224 rows, the data preprocessor pads the width to 416), no random
rescale, and smaller loaders. The classes, cameras, point cloud range (objects are annotated
within 50 m of the ego, the generator's ANN_RADIUS, as in nuScenes), pipelines, data
preprocessor and GridMask are the real config's.
"""

from mmengine.config import read_base

with read_base():
    from .nus_3d_cam import *  # noqa: F401,F403

from bev_deform.datasets.transforms import LoadMultiViewImages

data_root = "data/nuscenes-synth/"
version = "v1.0-mini"
metainfo = dict(metainfo, version=version)  # noqa: F405

img_scale = 1.0
input_size = (224, 400)  # (H, W) after the crop
# no random rescale: every synthetic camera has one focal length, so apparent size is a depth cue
# the model can rely on (a +-7% rescale blurs it by +-7%). The CPU config at 1500 iterations scored
# NDS 0.198 without it; with it, on the data of an earlier generator version, 0.189
train_scale_range = (1.0, 1.0)

# the real pipelines at this image size (the resize/crop is the 3rd train and the 2nd test step);
# the loading step as the measured CPU configs have it (the real one adds the default to_float32=False)
train_pipeline[0] = dict(type=LoadMultiViewImages, cameras=cameras, backend_args=backend_args)  # noqa: F405
test_pipeline[0] = train_pipeline[0]  # noqa: F405
train_pipeline[2] = dict(train_pipeline[2], final_size=input_size, scale_range=train_scale_range)  # noqa: F405
test_pipeline[1] = dict(test_pipeline[1], final_size=input_size, scale_range=(img_scale, img_scale))  # noqa: F405

# the real config's datasets at this root and version
_dataset.update(data_root=data_root, metainfo=metainfo)  # noqa: F405
train_dataloader.update(batch_size=2, num_workers=2)  # noqa: F405
train_dataloader["dataset"].update(_dataset, pipeline=train_pipeline)  # noqa: F405
# not the real train set's use_valid_flag=True: mmdet3d then keeps the boxes with num_lidar_pts > 0
train_dataloader["dataset"].pop("use_valid_flag")  # noqa: F405
val_dataloader.update(num_workers=2)  # noqa: F405
val_dataloader["dataset"].update(_dataset, pipeline=test_pipeline)  # noqa: F405
test_dataloader = val_dataloader  # noqa: F405

val_evaluator.update(data_root=data_root, ann_file=data_root + "nuscenes_infos_val.pkl", version=version)  # noqa: F405
test_evaluator = val_evaluator  # noqa: F405

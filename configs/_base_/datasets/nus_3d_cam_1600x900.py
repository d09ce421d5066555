"""Real nuScenes at the full 1600x900 (inputs cropped to 1600x896, a multiple of 32): the
dataset config (``nus_3d_cam``) with this image size in its train and test pipelines, for the
DETR3D/BEVFormer-size configs.
"""

from mmengine.config import read_base

with read_base():
    from .nus_3d_cam import *  # noqa: F401,F403

img_scale = 1.0
input_size = (896, 1600)  # (H, W) after the crop; a multiple of 32
train_scale_range = (0.95, 1.05)

# the base pipelines with this image size (the resize/crop is the 3rd train and the 2nd test step)
train_pipeline[2] = dict(train_pipeline[2], final_size=input_size, scale_range=train_scale_range)  # noqa: F405
test_pipeline[1] = dict(test_pipeline[1], final_size=input_size, scale_range=(img_scale, img_scale))  # noqa: F405
train_dataloader["dataset"]["pipeline"] = train_pipeline  # noqa: F405
val_dataloader["dataset"]["pipeline"] = test_pipeline  # noqa: F405
test_dataloader = val_dataloader  # noqa: F405

"""BEVFormer-tiny (static): ResNet-50 + FPN on C5, a 50x50 BEV, 3 encoder layers, 1 level, real
nuScenes at 800x450 (inputs cropped to 800x448), 24 epochs.

    bash tools/dist_train.sh configs/bevformer/bevformer_r50_fpn_8xb1-24e_nus-800x450.py 8
    python tools/test.py configs/bevformer/bevformer_r50_fpn_8xb1-24e_nus-800x450.py CKPT

Not trained here (no nuScenes and no GPU on the machines this project is built on): no NDS/mAP
is claimed for it. BEVFormer-tiny's own figure (NDS 0.354, mAP 0.252) is with temporal fusion
over 3-frame queues and its CAN-bus input, which this config does not have yet. The backbone
starts from torchvision's ImageNet ResNet-50, as BEVFormer-tiny's.
"""

from mmengine.config import read_base

with read_base():
    from .._base_.datasets.nus_3d_cam import *  # noqa: F401,F403
    from .._base_.default_runtime import *  # noqa: F401,F403
    from .._base_.models.bevformer_r50_fpn import *  # noqa: F401,F403
    from .._base_.schedules.adamw_cosine_24e import *  # noqa: F401,F403

train_dataloader.update(batch_size=1, num_workers=4)  # noqa: F405

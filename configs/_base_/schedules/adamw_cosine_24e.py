"""AdamW with a linear warm-up and a cosine decay over 24 epochs (DETR3D / BEVFormer practice):
image backbone at 0.1x the learning rate, gradient norm clipped at 35.

The lr is for a total batch of 8 samples (``auto_scale_lr``; ``tools/train.py --auto-scale-lr``
scales it to the actual total batch).
"""

from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper
from mmengine.runner import EpochBasedTrainLoop, TestLoop, ValLoop
from torch.optim import AdamW

max_epochs = 24
lr = 2e-4

optim_wrapper = dict(
    type=OptimWrapper,
    optimizer=dict(type=AdamW, lr=lr, weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={"img_backbone": dict(lr_mult=0.1)}),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type=LinearLR, start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type=CosineAnnealingLR, eta_min=lr * 1e-3, by_epoch=True, begin=0, end=max_epochs, T_max=max_epochs),
]

train_cfg = dict(type=EpochBasedTrainLoop, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type=ValLoop)
test_cfg = dict(type=TestLoop)

auto_scale_lr = dict(enable=False, base_batch_size=8)

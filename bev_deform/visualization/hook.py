"""Sampling-point mosaics from a recorded forward pass: the shared drawing entry point of
``tools/vis_sampling_points.py`` and of the test-time hook (``tools/test.py --show-dir``)."""

from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import mmcv
import numpy as np
import torch
from mmengine.hooks import Hook

from bev_deform.geometry import CAM_NAMES, BEVGrid
from bev_deform.registry import HOOKS
from bev_deform.visualization.recorder import BEVLayerRecord, LayerRecord, PillarRecord, SamplingRecorder
from bev_deform.visualization.sampling_visualizer import SamplingPointsVisualizer


def select_queries(pred_instances, queries: str | Sequence[int], num_queries: int) -> torch.Tensor:
    """Query indices to draw: ``'top-k'`` (the queries of the k best predictions, default k =
    ``num_queries``) or explicit ids. Predictions must carry ``query_ids`` (set by the head)."""
    if isinstance(queries, str):
        if not queries.startswith("top"):
            raise ValueError(f"queries must be 'top-k' (e.g. 'top-10') or a list of ids, got {queries!r}")
        k = int(queries.split("-")[1]) if "-" in queries else num_queries
        if "query_ids" not in pred_instances:
            raise ValueError("pred_instances_3d has no 'query_ids'; the head must report them for top-k")
        order = pred_instances.scores_3d.argsort(descending=True)
        ids = pred_instances.query_ids[order].cpu()  # query of each prediction, best score first
        # a query has one prediction per class: keep its first (best) one, wherever its repeats are
        repeat = (ids[:, None] == ids[None, :]).tril(-1).any(dim=1)  # (n,) equal to an earlier id
        return ids[~repeat][:k]
    return torch.as_tensor(list(queries), dtype=torch.long)


def cells_under_boxes(grid: BEVGrid, boxes) -> torch.Tensor:
    """Flat indices of the BEV cells under boxes (``LiDARInstance3DBoxes``): the cells whose centre
    lies inside a box's footprint, and the cell of each box's centre (so a box smaller than a cell
    has one), in increasing order."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long)
    t = boxes.tensor.double()  # (K, 9) x, y, z, l, w, h, yaw, ...
    centres = grid.cell_centres(dtype=torch.float64)  # (Q, 2)
    d = centres[None] - t[:, None, :2]  # (K, Q, 2) from each box centre
    cos, sin = t[:, 6].cos()[:, None], t[:, 6].sin()[:, None]  # (K, 1)
    along, across = d[..., 0] * cos + d[..., 1] * sin, -d[..., 0] * sin + d[..., 1] * cos  # box frame
    inside = (along.abs() <= t[:, None, 3] / 2) & (across.abs() <= t[:, None, 4] / 2)  # (K, Q)
    ids = torch.cat([inside.any(0).nonzero().flatten(), grid.cell_index(t[:, :2])])
    return torch.unique(ids[ids >= 0])


def images_from_inputs(img: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) BGR uint8 tensor (mmdet3d's packed multi-view images) -> (N, H, W, 3) RGB."""
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"inputs['img'] must be (N, 3, H, W), got shape {tuple(img.shape)}")
    return img.permute(0, 2, 3, 1).flip(-1).clamp(0, 255).to(torch.uint8).cpu().numpy()  # BGR -> RGB


def draw_data_sample(
    visualizer: SamplingPointsVisualizer,
    layers: Sequence[LayerRecord],
    batch_idx: int,
    img: torch.Tensor,
    data_sample,
    out_dir: str,
    layer: int = -1,
    queries: str | Sequence[int] = "top-20",
    encoder_layers: Sequence[PillarRecord] | None = None,
) -> dict[str, str]:
    """Draw one sample of a recorded batch and write ``{stem}_mosaic.png`` and one PNG per camera.

    For a BEVFormer-style model (``layers`` of :class:`BEVLayerRecord`), ``encoder_layers`` (the
    recorder's) must be given: the cameras show where the last encoder layer's spatial
    cross-attention sampled for the BEV cells under the chosen predictions' boxes, the bird's-eye
    panel where the decoder layer sampled on the BEV.

    Returns:
        ``{'mosaic': path, CAM_NAME: path, ...}``.
    """
    if not layers:
        raise ValueError("nothing was recorded: run the model inside `with SamplingRecorder(model)`")
    if not -len(layers) <= layer < len(layers):
        raise ValueError(f"layer must be in [-{len(layers)}, {len(layers) - 1}], got {layer}")
    pred = data_sample.pred_instances_3d
    ids = select_queries(pred, queries, num_queries=20)
    gt = data_sample.eval_ann_info.get("gt_bboxes_3d") if data_sample.get("eval_ann_info") else None
    if gt is None and "gt_instances_3d" in data_sample and "bboxes_3d" in data_sample.gt_instances_3d:
        gt = data_sample.gt_instances_3d.bboxes_3d
    shown = torch.isin(pred.query_ids.cpu(), ids) if "query_ids" in pred else slice(None)
    boxes = {"pred": pred.bboxes_3d[shown].to("cpu"), "gt": gt}
    stem = str(data_sample.metainfo.get("sample_idx", batch_idx))
    n_layers = len(layers)
    title = f"sample {stem}, decoder layer {layer % n_layers + 1}/{n_layers}, {len(ids)} queries"
    bev = None
    if isinstance(layers[layer], BEVLayerRecord):
        if not encoder_layers:
            raise ValueError("a BEV decoder was recorded: pass encoder_layers=recorder.encoder_layers")
        bev = layers[layer].select(batch_idx, ids)
        cells = cells_under_boxes(encoder_layers[-1].grid, boxes["pred"])
        record = encoder_layers[-1].select(batch_idx, cells)
        title += f" on the BEV; encoder layer {len(encoder_layers)} SCA for the {len(cells)} cells under them"
    else:
        record = layers[layer].select(batch_idx, ids)
    drawings, mosaic = visualizer.draw_sample(
        images_from_inputs(img), record, data_sample.metainfo, boxes, title, bev=bev
    )
    os.makedirs(out_dir, exist_ok=True)
    paths = {"mosaic": osp.join(out_dir, f"{stem}_mosaic.png")}
    mmcv.imwrite(mosaic[..., ::-1], paths["mosaic"])
    names = CAM_NAMES if len(drawings) == 6 else [f"cam{i}" for i in range(len(drawings))]
    for name, drawing in zip(names, drawings):
        paths[name] = osp.join(out_dir, f"{stem}_{name}.png")
        mmcv.imwrite(drawing.image[..., ::-1], paths[name])
    return paths


@HOOKS.register_module()
class SamplingPointsVisualizationHook(Hook):
    """At test time, record each batch's sampling points and write the mosaics.

    ``tools/test.py --show-dir D`` sets ``draw=True`` and ``show_dir=D``; files go to
    ``{work_dir}/{timestamp}/{show_dir}`` as mmdet3d's Det3DVisualizationHook does.

    Args:
        draw: draw at all (off by default, so a plain test run costs nothing).
        show_dir: output folder, relative to the run's log dir.
        interval: draw every ``interval``-th test batch.
        queries: ``'top-k'`` or a list of query ids.
        layer: decoder layer to draw (-1: the last).
    """

    priority = "NORMAL"

    def __init__(self, draw=False, show_dir="vis_sampling", interval=1, queries="top-20", layer=-1):
        self.draw, self.show_dir, self.interval = draw, show_dir, interval
        self.queries, self.layer = queries, layer
        self._recorder: SamplingRecorder | None = None

    def before_test_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.draw and batch_idx % self.interval == 0:
            self._recorder = SamplingRecorder(runner.model).__enter__()

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._recorder is None:
            return
        recorder, self._recorder = self._recorder, None
        recorder.__exit__(None, None, None)
        visualizer = runner.visualizer  # the config's (SamplingPointsVisualizer in default_runtime)
        if not isinstance(visualizer, SamplingPointsVisualizer):
            visualizer = SamplingPointsVisualizer.get_instance("sampling_points_hook")
        out_dir = osp.join(runner.work_dir, runner.timestamp, self.show_dir)
        for i, sample in enumerate(outputs):
            draw_data_sample(
                visualizer,
                recorder.layers,
                i,
                data_batch["inputs"]["img"][i],
                sample,
                out_dir,
                self.layer,
                self.queries,
                encoder_layers=recorder.encoder_layers,
            )

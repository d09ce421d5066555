"""Where the queries looked: recorder, sampling-point visualiser, test-time hook."""

from bev_deform.visualization.hook import (
    SamplingPointsVisualizationHook,
    cells_under_boxes,
    draw_data_sample,
    select_queries,
)
from bev_deform.visualization.recorder import BEVLayerRecord, LayerRecord, PillarRecord, SamplingRecorder
from bev_deform.visualization.sampling_visualizer import SamplingPointsVisualizer

__all__ = [
    "BEVLayerRecord",
    "LayerRecord",
    "PillarRecord",
    "SamplingPointsVisualizationHook",
    "SamplingPointsVisualizer",
    "SamplingRecorder",
    "cells_under_boxes",
    "draw_data_sample",
    "select_queries",
]

"""Where the queries looked: recorder, sampling-point visualiser, test-time hook."""

from bev_deform.visualization.hook import SamplingPointsVisualizationHook, draw_data_sample, select_queries
from bev_deform.visualization.recorder import LayerRecord, SamplingRecorder
from bev_deform.visualization.sampling_visualizer import SamplingPointsVisualizer

__all__ = [
    "LayerRecord",
    "SamplingPointsVisualizationHook",
    "SamplingPointsVisualizer",
    "SamplingRecorder",
    "draw_data_sample",
    "select_queries",
]

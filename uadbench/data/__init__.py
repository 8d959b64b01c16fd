"""Data: volumes, NIfTI I/O, the preprocessing pipeline, slice datasets and dataset sources."""

from uadbench.data.dataset import DatasetSource, create_dataset, default_data_root
from uadbench.data.pipeline import IMAGE_GRIDS, ImageGrid, get_image_grid, preprocess
from uadbench.data.slices import SliceDataset
from uadbench.data.volume import Volume

__all__ = [
    "DatasetSource",
    "IMAGE_GRIDS",
    "ImageGrid",
    "SliceDataset",
    "Volume",
    "create_dataset",
    "default_data_root",
    "get_image_grid",
    "preprocess",
]

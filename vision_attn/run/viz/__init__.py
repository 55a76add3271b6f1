"""All plotting, in one style (:mod:`.style`): attention maps, detection boxes, sample grids, curves."""

from .attention import pixel_attention_maps, plot_pixel_attention, query_pixel, window_weights_to_dense
from .curves import plot_data_size
from .style import new_figure, save_figure, to_display_rgb

__all__ = [
    "pixel_attention_maps",
    "plot_pixel_attention",
    "query_pixel",
    "window_weights_to_dense",
    "new_figure",
    "save_figure",
    "to_display_rgb",
    "plot_data_size",
]

"""Floor 4: Lightning callbacks (sample grids, sweep results, guards). May import models and below, not tasks or run."""
from .throughput import Throughput
from .sample_grids import SampleGrids, save_image_grid

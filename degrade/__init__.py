"""pirs.degrade: the degradation engine and the shard format.

Light to import: numpy, OpenCV and PyYAML only; nothing is loaded or downloaded at
import time. ``degrade`` owns the record schema and the one safe shard reader and
writer that the other pirs packages use.
"""

from .pipeline import Degraded, apply_ops, degrade, replay
from .recipe import Recipe, RecipeError, list_recipes, load_recipe

__all__ = ["Degraded", "Recipe", "RecipeError", "apply_ops", "degrade", "list_recipes", "load_recipe", "replay"]

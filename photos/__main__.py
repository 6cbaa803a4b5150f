"""python -m photos fetch|list: the data command line."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image

from codec.cli_util import run_command
from codec.images import ImageError, list_images

from . import DATA_ROOT, SPLITS, fetch, resolve_root, summary


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _print_summary(root: Path) -> None:
    for split, (n, mp) in summary(root).items():
        print(f"{split:5s}: {n:3d} images, {mp:7.2f} megapixels  ({root / split})")


def _cmd_fetch(root: Path) -> None:
    start = time.monotonic()
    fetch(root)
    _print_summary(root)
    print(f"fetch took {time.monotonic() - start:.1f} s")


def _cmd_list(root: Path) -> None:
    if not any((root / s).is_dir() for s in SPLITS):
        raise ImageError(f"no data in {root}; run `python -m photos fetch`")
    for split in SPLITS:
        for path in list_images(root / split) if (root / split).is_dir() else []:
            with Image.open(path) as im:
                print(f"{split}/{path.relative_to(root / split)}  {im.width}x{im.height}")
    _print_summary(root)


def main(argv: list[str] | None = None) -> int:
    """Run the data command line; return the exit status."""
    parser = _Parser(prog="python -m photos", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (("fetch", "fetch the evaluation set and the training corpus"),
                       ("list", "list the images with counts and megapixels")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--root", default=None,
                         help=f"data folder (default: {DATA_ROOT})")
    args = parser.parse_args(argv)
    root = resolve_root(args.root)
    command = _cmd_fetch if args.command == "fetch" else _cmd_list
    return run_command(lambda: command(root), (ImageError, RuntimeError, OSError))


if __name__ == "__main__":
    sys.exit(main())

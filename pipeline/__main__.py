"""``python -m pipeline`` (`make distill`): the main job, see pipeline.run."""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())

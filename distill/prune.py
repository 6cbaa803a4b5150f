r"""Structured channel pruning of a student's synthesis transforms (torch-pruning's dependency graph).

Only the internal widths of ``synthesis_y`` / ``synthesis_uv`` are pruned: the latent channel counts stay,
because the entropy path, the integer scale decoder and the bitstream layout depend on them. A prunable
*stream* is the output of a PixelShuffle inside the synthesis that is not a model output; pruning stream
channel c removes rows c*r*r .. c*r*r+r*r-1 of the conv before the shuffle, the channel in every residual
DSBlock of the stage (depthwise, grouped 1x1 and its ChannelShuffle) and the input of the next layers.

This module is the public face of the pruning stage and its ``python -m`` entry point; the code lives in
``prune_graph`` (torch-pruning's graph and the custom pruners), ``prune_streams`` (the prunable streams of
a codec), ``prune_plan`` (the replayable record of a pruning) and ``prune_search`` (pruning to a MAC
target), the command line in ``prune_cli``. Those import one another downwards only, never this module.

    python -m distill.prune --student weights/student-2k.safetensors --teacher weights/teacher.safetensors \
        --target-kmac 1.5 --rounds 3 --finetune-steps 300 -o runs/prune/student-2k-pruned.safetensors
"""
from __future__ import annotations

import sys

from .prune_graph import (SHAPE_PRUNERS, ChannelShufflePruner, GDNPruner, PixelShufflePruner,
                          PixelUnshufflePruner, build_graph, channel_group, group_slices, touches_output,
                          zero_group)
from .prune_plan import LEGACY_FORMAT, apply_plan, apply_steps
from .prune_search import RANKINGS, costs, floors, prune_round, prune_to_target, rank_units, select_steps
from .prune_streams import (SYNTHESIS, Stream, find_streams, prune_stream, stream_group, synthesis_graph,
                            zero_stream)

__all__ = ["SYNTHESIS", "SHAPE_PRUNERS", "PixelShufflePruner", "PixelUnshufflePruner", "ChannelShufflePruner",
           "GDNPruner", "build_graph", "channel_group", "group_slices", "zero_group", "touches_output",
           "Stream", "synthesis_graph", "find_streams", "stream_group", "prune_stream", "zero_stream",
           "LEGACY_FORMAT", "apply_steps", "apply_plan", "costs", "floors", "RANKINGS", "rank_units",
           "select_steps", "prune_round", "prune_to_target"]

if __name__ == "__main__":
    from distill.prune_cli import main

    sys.exit(main())

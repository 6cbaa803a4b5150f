"""The main job (`make distill`): data -> distil -> prune -> export -> profile -> time -> RD -> one summary.

Top of the layers: it calls each stage's library function (distill, prune, export, profiling, evaluation)
and hands on loaded models and the paths they wrote (``run.Entry``)."""

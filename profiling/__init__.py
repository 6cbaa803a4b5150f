"""MAC profiler: exact encoder/decoder cost per luma pixel, per module, by the convention of DESIGN.md.

    from profiling import profile_model
    report = profile_model("teacher")            # 768x512 by default
    print(report.to_table()); report.to_json(); report.to_markdown()

Command line: ``python -m profiling report --model SPEC`` and ``python -m profiling all --out reports``.
"""
from .counter import Count, MacCounter, ProfilingError
from .profile import profile_model
from .report import ModuleRow, Report

__all__ = ["Count", "MacCounter", "ModuleRow", "ProfilingError", "Report", "profile_model"]

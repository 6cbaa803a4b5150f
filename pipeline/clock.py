"""Time estimates for the main job's stages, scaled by this machine's measured training step, so that the
run can say up front how long it will take and what it leaves out."""
from __future__ import annotations

import time


# ---- time estimates ---------------------------------------------------------------------------------
# Seconds measured on the reference machine (2-core AMD EPYC, shared with two other jobs) on which
# student-2k's training step (batch 8 of 128x128 crops, forward + backward) took REF_STEP s. Estimates scale
# by this machine's measured step; costs that depend on the student also by its step against student-2k's.
REF_STEP = 0.25
STAGES = 8
COST = {"step_kd_self": 0.5, "step_rd": 0.4, "step_kd_teacher": 2.3, "prune_search": 15.0,
        "export_int8": 55.0, "export_fp32": 25.0, "export_teacher": 22.0, "profile": 2.0,
        "time_model": 1.5, "time_teacher": 6.0, "rd_learned": 0.45, "rd_teacher": 1.9,
        "rd_classical": {"jpeg": 0.09, "webp": 0.3, "cjpeg": 0.15, "jpeg2000": 0.3, "avif": 0.8, "jxl": 0.5,
                         "hevc": 1.0}}


class Clock:
    """Stage headers with what the stage does and its estimated time; stage times for the summary.

    The time left to the end is the remaining stages' estimates scaled by how the finished stages went
    against theirs (this machine's load may change while the pipeline runs)."""

    def __init__(self, machine: float, model: float):
        self.machine, self.model = machine, model    # speed factors against the reference machine
        self.start = time.monotonic()
        self.times: dict[str, float] = {}
        self.estimates: dict[str, float] = {}
        self._t = self._key = None

    def est(self, machine_s: float = 0.0, model_s: float = 0.0) -> float:
        return self.machine * (machine_s + self.model * model_s)

    def drift(self) -> float:
        """Actual over estimated time of the finished stages of some length (1 before any), within 0.5 .. 3."""
        done = [k for k in self.times if self.estimates.get(k, 0) >= 20]
        if not done:
            return 1.0
        return min(3.0, max(0.5, sum(self.times[k] for k in done) / sum(self.estimates[k] for k in done)))

    def stage(self, n: int, key: str, what: str, estimate: float, left: float | None = None) -> None:
        self.end()
        el = time.monotonic() - self.start
        f = self.drift()
        tail = f"; ~{dur(left * f)} to the end of the pipeline" if left else ""
        print(f"\n=== {n}/{STAGES} {what} ===\n    estimated {dur(estimate * f)} on this machine{tail} "
              f"(elapsed {dur(el)})", flush=True)
        self._t, self._key = time.monotonic(), key
        self.estimates[key] = estimate

    def end(self) -> None:
        if self._key:
            self.times[self._key] = round(time.monotonic() - self._t, 1)
            print(f"    {self._key}: done in {dur(self.times[self._key])}", flush=True)
        self._key = None


def dur(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def calibrate(student: str) -> tuple[float, float]:
    """(machine factor, student factor): this machine's training step of student-2k against REF_STEP, and
    the student's step against student-2k's (a few forward+backward passes, about 2 s)."""
    import torch

    from codec.registry import create_model
    from training import rd_loss

    def step_s(name: str) -> float:
        m = create_model(name).train()
        g = torch.Generator().manual_seed(0)
        y, uv = torch.rand(8, 1, 128, 128, generator=g), torch.rand(8, 2, 64, 64, generator=g)
        q = torch.randint(0, m.num_qualities, (8,), generator=g)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            rd_loss(m, m(y, uv, q), y, uv, q)["loss"].backward()
            times.append(time.perf_counter() - t)
        return min(times[1:])

    ref = step_s("student-2k")
    return ref / REF_STEP, (step_s(student) / ref if student != "student-2k" else 1.0)

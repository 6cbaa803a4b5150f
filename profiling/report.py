"""The profile of one model and its renderings: JSON, Markdown and a terminal table."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

SIDES = ("decoder", "encoder")
TARGET_RATIO = 35.0
CONVENTION = ("MACs per luma pixel of the picture (DESIGN.md 'MAC convention'): conv Cout*Cin/g*kh*kw*Hout*Wout, "
              "transposed conv on the input grid, masked convs count unmasked taps only, GDN counts its 1x1 "
              "conv, integer MACs count, element-wise ops count 0 and are listed")


@dataclass
class ModuleRow:
    """One top-level module of the codec: its cost per picture and where that cost goes."""

    name: str
    label: str
    sides: tuple[str, ...]
    macs: float                      # per processed picture
    params: int
    integer_macs: float = 0.0
    masked: str = ""                 # e.g. "12/25 taps" for a masked convolution
    layers: list[dict] = field(default_factory=list)    # {"path", "type", "macs", "note"}
    zero_mac_ops: list[str] = field(default_factory=list)
    data_ops: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Encoder and decoder cost of one model, per module, per luma pixel of the picture."""

    model: str
    height: int
    width: int
    proc_height: int
    proc_width: int
    rows: list[ModuleRow]
    model_params: int = 0            # parameters the model holds itself (gain vectors), needed by both sides
    teacher_kmac: dict | None = None  # {"encoder": kMAC/px, "decoder": kMAC/px} at the same size
    size_check: dict | None = None
    integer_check: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # ---- figures ----------------------------------------------------------------------------------
    @property
    def pixels(self) -> int:
        """Luma pixels of the picture (the divisor of every per-pixel figure)."""
        return self.height * self.width

    def kmac(self, macs: float) -> float:
        """MACs per picture -> kMAC per luma pixel."""
        return macs / self.pixels / 1000

    def side_rows(self, side: str) -> list[ModuleRow]:
        """Rows run by ``side``, most expensive first."""
        return sorted((r for r in self.rows if side in r.sides), key=lambda r: -r.macs)

    def excluded_rows(self) -> list[ModuleRow]:
        """Modules neither side runs when coding (training-time likelihood models)."""
        return [r for r in self.rows if not r.sides]

    def total(self, side: str) -> float:
        """kMAC per luma pixel of ``side``."""
        return self.kmac(sum(r.macs for r in self.side_rows(side)))

    def params(self, side: str) -> int:
        """Parameters ``side`` needs."""
        return sum(r.params for r in self.side_rows(side)) + self.model_params

    def ratio(self, side: str) -> float | None:
        """Teacher kMAC / this model's kMAC for ``side`` (None if unknown)."""
        if not self.teacher_kmac:
            return None
        own = self.total(side)
        return self.teacher_kmac[side] / own if own else float("inf")

    def heaviest(self, side: str = "decoder", n: int = 3) -> list[ModuleRow]:
        """The ``n`` most expensive modules of ``side``."""
        return self.side_rows(side)[:n]

    # ---- renderings -------------------------------------------------------------------------------
    def _row_dict(self, r: ModuleRow, side_total: float | None) -> dict:
        k = self.kmac(r.macs)
        d = {"name": r.name, "label": r.label, "kmac_per_px": k,
             "share": k / side_total if side_total else None, "params": r.params,
             "integer_kmac_per_px": self.kmac(r.integer_macs), "masked": r.masked or None,
             "zero_mac_ops": r.zero_mac_ops, "data_ops": r.data_ops,
             "layers": [{"path": x["path"], "type": x["type"], "kmac_per_px": self.kmac(x["macs"]),
                         "note": x["note"]} for x in r.layers]}
        if side_total is None:
            d.pop("share")
        return d

    def to_dict(self) -> dict:
        """Everything in the report as plain data."""
        out = {"model": self.model, "picture": {"height": self.height, "width": self.width},
               "processed": {"height": self.proc_height, "width": self.proc_width},
               "unit": "kMAC per luma pixel", "convention": CONVENTION}
        for side in SIDES:
            total = self.total(side)
            out[side] = {"kmac_per_px": total, "mac_per_px": total * 1000, "params": self.params(side),
                         "integer_kmac_per_px": self.kmac(sum(r.integer_macs for r in self.side_rows(side))),
                         "teacher_ratio": self.ratio(side),
                         "modules": [self._row_dict(r, total) for r in self.side_rows(side)]}
        out["model_params"] = self.model_params
        out["not_run_when_coding"] = [self._row_dict(r, None) for r in self.excluded_rows()]
        out["teacher_kmac_per_px"] = self.teacher_kmac
        out["target_ratio"] = TARGET_RATIO
        out["size_check"] = self.size_check
        out["integer_check"] = self.integer_check
        out["notes"] = self.notes
        return out

    def to_json(self, indent: int = 2) -> str:
        """The report as JSON."""
        return json.dumps(self.to_dict(), indent=indent)

    def _summary_lines(self) -> list[tuple[str, str, str]]:
        lines = [("kMAC/px", f"{self.total('encoder'):.3f}", f"{self.total('decoder'):.3f}")]
        ints = [self.kmac(sum(r.integer_macs for r in self.side_rows(s))) for s in ("encoder", "decoder")]
        lines.append(("of which integer", f"{ints[0]:.3f}", f"{ints[1]:.3f}"))
        lines.append(("parameters", _params(self.params("encoder")), _params(self.params("decoder"))))
        if self.teacher_kmac:
            lines.append((f"ratio to teacher (target >= {TARGET_RATIO:.0f}x)",
                          *(_ratio(self.ratio(s)) for s in ("encoder", "decoder"))))
        return lines

    def _module_lines(self, side: str) -> list[tuple[str, ...]]:
        total = self.total(side)
        return [(r.label, f"{self.kmac(r.macs):.3f}", f"{self.kmac(r.macs) / total:.1%}" if total else "-",
                 _params(r.params), _note(r)) for r in self.side_rows(side)]

    def _footer(self) -> list[str]:
        lines = []
        ex = self.excluded_rows()
        if ex:
            lines.append("not run when coding (training-time likelihoods; the coder uses CDF tables): "
                         + ", ".join(f"{r.label} {self.kmac(r.macs):.4f} kMAC/px" for r in ex))
        zero = [f"{r.label}: {', '.join(r.zero_mac_ops)}" for r in self.rows if r.sides and r.zero_mac_ops]
        if zero:
            lines.append("0-MAC ops present (counted as 0 by convention): " + "; ".join(zero))
        moved = sorted({op for r in self.rows if r.sides for op in r.data_ops})
        if moved:
            lines.append("data-movement ops present (0 MAC): " + ", ".join(moved))
        if self.size_check:
            s = self.size_check
            lines.append(f"size check: at {s['width']}x{s['height']} (processed {s['proc_width']}x"
                         f"{s['proc_height']}) encoder {s['encoder_kmac_per_px']:.3f} ({s['encoder_diff']:+.2%}), "
                         f"decoder {s['decoder_kmac_per_px']:.3f} ({s['decoder_diff']:+.2%}): "
                         + ("agrees within 1%" if s["within_1pct"] else "DIFFERS BY MORE THAN 1%"))
        for c in self.integer_check:
            lines.append(f"integer path check: {c['label']} int_forward {c['int_forward_macs']:,.0f} MACs "
                         f"= forward {c['forward_macs']:,.0f} MACs")
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def _title(self) -> str:
        pad = ("" if (self.proc_height, self.proc_width) == (self.height, self.width)
               else f", processed padded to {self.proc_width}x{self.proc_height}")
        return (f"{self.model}: {self.width}x{self.height} picture{pad}; "
                "kMAC per luma pixel of the picture")

    def to_markdown(self, level: int = 2) -> str:
        """The report as a Markdown section."""
        h = "#" * level
        out = [f"{h} {self.model}", "", self._title() + ".", "", "| | encoder | decoder |", "|---|---|---|"]
        out += [f"| {a} | {b} | {c} |" for a, b, c in self._summary_lines()]
        for side in SIDES:
            out += ["", f"{h}# {side.capitalize()} ({self.total(side):.3f} kMAC/px)", "",
                    "| module | kMAC/px | share | params | note |", "|---|---:|---:|---:|---|"]
            out += ["| " + " | ".join(cells) + " |" for cells in self._module_lines(side)]
        out += [""] + [f"- {line}" for line in self._footer()]
        out += ["", "<details><summary>Per-layer breakdown</summary>", "",
                "| module | layer | type | kMAC/px | note |", "|---|---|---|---:|---|"]
        for r in self.rows:
            for x in r.layers:
                out.append(f"| {r.label} | `{x['path']}` | {x['type']} | {self.kmac(x['macs']):.4f} | {x['note']} |")
        out += ["", "</details>", ""]
        return "\n".join(out)

    def to_table(self) -> str:
        """The report as plain text for a terminal."""
        out = [self._title(), ""]
        out += _columns([("", "encoder", "decoder")] + self._summary_lines(), right=(1, 2))
        for side in SIDES:
            out += ["", f"{side.upper()}  {self.total(side):.3f} kMAC/px"]
            out += _columns([("  module", "kMAC/px", "share", "params", "note")]
                            + [("  " + c[0], *c[1:]) for c in self._module_lines(side)], right=(1, 2, 3))
        out += [""] + self._footer()
        return "\n".join(out)


def _params(n: int) -> str:
    return f"{n / 1e6:.3f} M" if n >= 100_000 else f"{n / 1e3:.1f} k"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _note(r: ModuleRow) -> str:
    notes = []
    if r.masked:
        notes.append(f"masked: {r.masked} counted")
    if r.integer_macs:
        notes.append("integer MACs" if r.integer_macs == r.macs else f"{r.integer_macs:,.0f} integer MACs")
    return "; ".join(notes)


def _columns(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]

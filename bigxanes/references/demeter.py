"""Athena/Demeter multi-column exports (``.nor``, ``.dat``, any suffix).

Athena's "Save marked groups as: multicolumn normalized mu(E)" (or mu(E), derivative ...) writes
an XDI-style header and one energy column plus one column per group::

    # XDI/1.0 Demeter/0.9.26
    # Demeter.output_filetype: multicolumn normalized mu(E)
    # Element.symbol: Fe
    # Column.1: energy eV
    # Column.2: FePO4
    # Column.3: Eu2O3
    # ///
    #------------------------
    #  energy      FePO4     Eu2O3
      7000.000  0.0012  -0.0003

Lines may end in CRLF and the last ``#`` header line may be cut (Athena truncates long lines),
so names come from the ``# Column.N:`` lines (the whole text after the colon, units dropped only
for the energy column); the last header line is used only when there are no ``Column`` lines,
and only when its word count matches the data. Every column except the energy column is a
reference; a column whose name merely starts with "e" (``Eu2O3``) is a reference too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["is_demeter_multicolumn", "read_demeter_multicolumn", "header_lines"]

_COLUMN = re.compile(r"^#\s*column\.(\d+)\s*:\s*(.*?)\s*$", re.IGNORECASE)
_ENERGY_NAMES = ("energy", "e", "energy_ev", "energy(ev)", "ev")


def header_lines(path: Path, max_lines: int = 400) -> list[str]:
    """The leading ``#`` lines of a text file (CR/LF stripped)."""
    out: list[str] = []
    with open(path, encoding="utf-8", errors="replace", newline=None) as fh:
        for _ in range(max_lines):
            line = fh.readline()
            if not line:
                break
            s = line.rstrip("\r\n")
            if not s.lstrip().startswith("#"):
                break
            out.append(s)
    return out


def is_demeter_multicolumn(path: str | os.PathLike) -> bool:
    """True when the first line is ``# XDI/... Demeter/...`` and more than one non-energy
    column is declared (a multi-group export), or the output type says ``multicolumn``."""
    head = header_lines(Path(path))
    if not head or "demeter" not in head[0].lower() or "xdi/" not in head[0].lower():
        return False
    if any("multicolumn" in h.lower() for h in head):
        return True
    cols = [m.group(2) for h in head if (m := _COLUMN.match(h))]
    names = [c.split()[0].lower() for c in cols if c]
    std = {"energy", "norm", "flat", "mu", "nbkg", "fbkg", "nder", "nsec", "i0", "itrans"}
    return len(cols) > 2 and not set(names) <= std


def read_demeter_multicolumn(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a Demeter multi-column export: ``(energy (T,), values (T, k), names)``.

    Energy is the column named ``energy`` (else the first column); values are returned as
    stored (Athena's normalized mu(E) for the usual export). Raises ValueError when the rows
    do not all have the declared number of columns or a value is not a number.
    """
    p = Path(path)
    head = header_lines(p)
    cols: dict[int, str] = {}
    for h in head:
        m = _COLUMN.match(h)
        if m:
            cols[int(m.group(1)) - 1] = m.group(2)
    rows: list[list[float]] = []
    with open(p, encoding="utf-8", errors="replace", newline=None) as fh:
        for lineno, raw in enumerate(fh, 1):
            s = raw.strip()
            if not s or s.startswith("#"):
                continue
            try:
                rows.append([float(t) for t in s.split()])
            except ValueError:
                raise ValueError(
                    f"{p}: line {lineno} is not numeric ({s[:60]!r}); the export is damaged."
                ) from None
    if not rows:
        raise ValueError(f"{p}: no data rows in this Demeter export.")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{p}: rows have different numbers of columns {sorted(widths)}.")
    data = np.asarray(rows, dtype=np.float64)
    ncol = data.shape[1]
    if cols:
        if max(cols) + 1 != ncol:
            raise ValueError(
                f"{p}: the header declares {max(cols) + 1} columns (Column.N lines) but the "
                f"data have {ncol}; the export is damaged."
            )
        names = [cols.get(i, f"col{i + 1}") for i in range(ncol)]
    else:
        last = head[-1].lstrip("#").split() if head else []
        if len(last) != ncol:
            raise ValueError(
                f"{p}: no '# Column.N:' lines and the last header line names {len(last)} "
                f"columns for {ncol} data columns; cannot name the references."
            )
        names = last
    low = [n.split()[0].lower() if n.split() else "" for n in names]
    ie = next((i for i, n in enumerate(low) if n in _ENERGY_NAMES), 0)
    unit = names[ie].split()[1].lower() if len(names[ie].split()) > 1 else ""
    energy = data[:, ie] * (1000.0 if unit == "kev" else 1.0)
    keep = [i for i in range(ncol) if i != ie]
    if not keep:
        raise ValueError(f"{p}: only an energy column; no reference spectra.")
    return energy, data[:, keep], [names[i].strip() for i in keep]

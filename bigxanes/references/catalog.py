"""One entry point for every reference file: detect the format by content, list the references
it holds, select them by the names as printed, and check that a chosen set can be unmixed.

Formats (:func:`detect_format`, checked in this order, by content; the suffix only breaks ties):

* ``"athena-project"`` — gzip or plain text with ``$old_group`` records (:mod:`.prj`).
* ``"demeter-multicolumn"`` — first line ``# XDI/... Demeter/...`` and several group columns
  (:mod:`.demeter`).
* ``"xdi"`` — any other file whose first line is ``# XDI/...`` (one spectrum).
* ``"athena-nor"`` — ``.nor`` single-group export (``# energy norm nbkg flat ...``).
* ``"table"`` — CSV/TSV/whitespace numbers with or without a header line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..normalize import find_e0, normalize_spectra
from .demeter import header_lines, is_demeter_multicolumn, read_demeter_multicolumn
from .prj import ReferenceRecord, is_athena_project, read_athena_project

__all__ = [
    "detect_format",
    "list_references",
    "select_references",
    "check_reference_set",
    "format_reference_list",
]

_XDI_NORMALIZED = ("norm", "flat")


def detect_format(path: str | os.PathLike) -> str:
    """Name of the reference format of ``path``, decided from its content (see module doc)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"reference file not found: {p}")
    if is_athena_project(p):
        return "athena-project"
    head = header_lines(p, max_lines=1)
    first = head[0].lstrip("# ").upper() if head else ""
    if first.startswith("XDI/"):
        return "demeter-multicolumn" if is_demeter_multicolumn(p) else "xdi"
    if p.suffix.lower() == ".xdi":
        return "xdi"
    if p.suffix.lower() == ".nor":
        return "athena-nor"
    return "table"


def _edge(energy: np.ndarray, y: np.ndarray) -> float:
    return float(find_e0(energy, y, smooth=1.0 if energy.size > 10 else 0.0))


def _records(energy, values, names, path: Path, fmt: str, normalized: bool):
    out = []
    for j, name in enumerate(names):
        y = np.asarray(values[:, j], dtype=np.float64)
        if normalized:
            norm, e0, step = y, _edge(energy, y), 1.0
        else:
            res = normalize_spectra(energy, y)
            norm, e0, step = res.flat, float(res.e0), float(res.edge_step)
        out.append(
            ReferenceRecord(
                name=name,
                energy=energy,
                mu=y,
                norm=norm,
                e0=e0,
                edge_step=step,
                source=f"{path}",
                params={"format": fmt},
            )
        )
    return out


def list_references(path: str | os.PathLike) -> list[ReferenceRecord]:
    """Every reference in one file, whatever its format (detected by content).

    ``norm`` of each record is the spectrum to fit with: Athena projects are normalized with
    each group's own parameters (:func:`.prj.read_athena_project`); Demeter multi-column
    "normalized" exports, XDI ``norm``/``flat`` columns, ``.nor`` and plain tables are taken as
    stored (they hold normalized spectra); raw XDI mu(E) is normalized with
    :func:`bigxanes.normalize.normalize_spectra` defaults and flattened. ``e0`` is Athena's
    ``bkg_e0`` for projects, else the maximum of the (1-point smoothed) derivative.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; content that cannot be parsed with confidence (never garbage).
    """
    from . import read_athena_nor, read_table, read_xdi

    p = Path(path)
    fmt = detect_format(p)
    if fmt == "athena-project":
        recs = read_athena_project(p)
        for r in recs:
            r.params.setdefault("format", fmt)
        return recs
    if fmt == "demeter-multicolumn":
        e, v, names = read_demeter_multicolumn(p)
        from ..energy import sort_energies

        e, (v,), _ = sort_energies(e, v)
        ftype = next((h.lower() for h in header_lines(p) if "output_filetype" in h.lower()), "")
        normalized = "mu(e)" not in ftype or "norm" in ftype  # normalized or derivative export
        return _records(e, v, names, p, fmt, normalized)
    if fmt == "xdi":
        cols = [
            h.split(":", 1)[1].split()[0].lower()
            for h in header_lines(p)
            if h.lstrip("# ").lower().startswith("column.") and ":" in h
        ]
        e, v, names = read_xdi(p)
        normalized = any(c in _XDI_NORMALIZED for c in cols)
        return _records(e, v, names, p, fmt, normalized)
    if fmt == "athena-nor":
        e, v, names = read_athena_nor(p)
        return _records(e, v, names, p, fmt, True)
    e, v, names = read_table(p)
    return _records(e, v, names, p, fmt, True)


def format_reference_list(records: Sequence[ReferenceRecord]) -> str:
    """Table for ``bigxanes info FILE``: one line per reference (name, energy range, e0)."""
    w = max([len(r.name) for r in records] + [4])
    lines = [f"{'name':<{w}}  {'energy range (eV)':<21}  {'points':>6}  {'e0 (eV)':>9}  shift"]
    for r in records:
        lo, hi = r.energy_range
        lines.append(
            f"{r.name:<{w}}  {lo:>9.2f}-{hi:<11.2f}  {r.energy.size:>6d}  {r.e0:>9.2f}  "
            f"{r.eshift:+.2f}"
        )
    return "\n".join(lines)


def select_references(names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Indices into ``names`` of the ``wanted`` references, in the order asked.

    Each wanted name matches, in this order: exactly; case-insensitively; as the unique
    case-insensitive prefix of one name. Otherwise ValueError (one line) listing every
    available name and, for an ambiguous prefix, the candidates. Asking twice for the same
    reference is an error too.
    """
    out: list[int] = []
    avail = ", ".join(repr(n) for n in names)
    for w in wanted:
        if w in names:
            idx = list(names).index(w)
        else:
            lw = w.lower()
            ci = [i for i, n in enumerate(names) if n.lower() == lw]
            if len(ci) == 1:
                idx = ci[0]
            else:
                pre = [i for i, n in enumerate(names) if n.lower().startswith(lw)]
                if len(pre) == 1 and not ci:
                    idx = pre[0]
                elif len(ci) > 1 or len(pre) > 1:
                    cand = ", ".join(repr(names[i]) for i in (ci or pre))
                    raise ValueError(
                        f"reference name {w!r} is ambiguous ({cand}); give more of the name "
                        f"in --components (available: {avail})."
                    )
                else:
                    raise ValueError(
                        f"no reference named {w!r}; --components takes names as "
                        f"'bigxanes info FILE' prints them: {avail}."
                    )
        if idx in out:
            raise ValueError(f"reference {names[idx]!r} was asked for twice in --components.")
        out.append(idx)
    return out


def check_reference_set(
    A: np.ndarray, names: Sequence[str], *, max_condition: float = 1e8
) -> float:
    """Check that the references ``A`` (T, L) can be unmixed; return ``cond(AᵀA)``.

    The normal equations of the LCF/NNLS fit use ``AᵀA``; its 2-norm condition number
    ``(s_max / s_min)²`` bounds how much noise is amplified in the fractions. When it exceeds
    ``max_condition`` the pair of references with the largest cosine similarity
    ``|a_i·a_j| / (|a_i| |a_j|)`` is named in a one-line ValueError (drop one of them from
    ``--components``).
    """
    from ..validation import check_conditioning

    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[1] != len(names):
        raise ValueError(f"references have shape {A.shape} but {len(names)} names were given.")
    if not np.all(np.isfinite(A)):
        raise ValueError("references contain NaN/Inf; check their energy coverage.")
    return check_conditioning(A, list(names), max_condition=max_condition)

"""Reading reference spectra from files.

Every reader returns ``(energy_eV, values, names)`` with ``energy_eV`` (T,) strictly increasing
in eV (keV detected by :func:`bigxanes.energy.as_ev`), ``values`` (T, k) and ``k`` names.

Supported formats
-----------------
* **Text / CSV table** (``.txt``, ``.csv``, ``.dat``, anything else): whitespace, comma or
  semicolon separated numbers, first column energy. Lines starting with ``#``, ``!`` or ``%``
  are comments. Two columns = one reference named after the file stem. More columns = one
  reference per column, named from a header line (an uncommented non-numeric first line, or the
  last comment line with one word per column, e.g. ``# energy NiO LiNiO2``).
* **XDI** (first line ``# XDI/...`` or ``.xdi``): column names from ``# Column.N: name [units]``.
  The spectrum is the first present of ``norm``, ``flat``, ``mu``, ``mutrans``, ``mu_trans``,
  ``mufluor``, ``mu_fluor``; else ``ln(i0 / itrans)`` from ``i0`` and ``itrans``/``it``/``i1``
  (transmission), else ``ifluor / i0`` (fluorescence). Energy column ``energy`` (eV, or keV by
  its units / magnitude). One reference named after the file stem.
* **Athena** ``.nor`` export: the last ``#`` header line lists column names
  (``# energy norm nbkg flat fbkg nder nsec``); ``norm`` is used by default (edge-step
  normalized, like larch's ``norm``), ``flat`` on request via ``column=``. Athena may write
  several spectra (``norm`` columns of several groups) – then every column that is not
  energy-like is offered with its header name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..energy import as_ev, check_references, interpolate_reference, sort_energies
from ..normalize import normalize_spectra
from .catalog import (
    check_reference_set,
    detect_format,
    format_reference_list,
    list_references,
    select_references,
)
from .demeter import read_demeter_multicolumn
from .prj import ReferenceRecord, is_athena_project, read_athena_project

__all__ = [
    "ReferenceRecord",
    "read_athena_project",
    "is_athena_project",
    "read_demeter_multicolumn",
    "detect_format",
    "list_references",
    "select_references",
    "check_reference_set",
    "format_reference_list",
    "read_table",
    "read_xdi",
    "read_athena_nor",
    "read_reference_file",
    "read_references",
    "load_ni_references",
]

_COMMENT = ("#", "!", "%")
_SPLIT = re.compile(r"[\s,;]+")
_XDI_MU = ("norm", "flat", "mu", "mutrans", "mu_trans", "mufluor", "mu_fluor")
_XDI_IT = ("itrans", "it", "i1")


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


_DECIMAL_COMMA = re.compile(r"\d,\d")
#: Column names that hold energies (Athena: ``energy``, ``e``; ``e0``; units as names).
_ENERGY_NAME = re.compile(r"^(e|e0|en|energy|ev|kev)([_\s(\[].*)?$")
#: A field written as digits with a leading zero ("00", "00393"): no number formatter writes
#: that; it is the fractional part of a decimal comma split on ",".
_LEADING_ZERO = re.compile(r"^[+-]?0\d+$")


def _split_fields(line: str) -> list[str]:
    """Split one data line into fields.

    ``;`` or tab separated lines may use a decimal comma (``7112,5;0,123``): there the commas
    become points. A line with both spaces and digit-comma-digit groups but no ``;``/tab
    (``7112,5 0,123``) is ambiguous and rejected (ValueError) rather than read as garbage;
    plain comma or whitespace separated lines are split on either.
    """
    if ";" in line or ("\t" in line and "," in line):
        sep = ";" if ";" in line else "\t"
        return [t.strip().replace(",", ".") for t in line.split(sep) if t.strip()]
    if _DECIMAL_COMMA.search(line) and re.search(r"\d\s+\d", line):
        raise ValueError(
            f"ambiguous line {line[:60]!r}: commas between digits and spaces between fields; "
            "save the table with '.' as decimal mark (or ';' between fields)."
        )
    return [t for t in _SPLIT.split(line) if t]


def _check_decimal_commas(path: Path, rows: list[list[str]], header: list[str] | None) -> None:
    """Refuse a ``,``-separated table that was written with decimal commas.

    ``8250,5,0,123`` split on ``,`` gives four integers, silently read as twice the columns.
    Two signs that cannot come from a table written with a ``.`` decimal mark: a field with a
    leading zero (``00393``, the fractional part of ``0,00393``), or no decimal point in any
    field of a table without header whose fields are all integers (energies and spectra are
    not).
    """
    if not rows:
        return
    fields = [t for r in rows for t in r]
    leading = next((t for t in fields if _LEADING_ZERO.match(t)), None)
    no_point = all(re.fullmatch(r"[+-]?\d+", t) for t in fields)
    if leading is not None or (no_point and header is None and len(rows[0]) >= 3):
        why = f"field {leading!r} has a leading zero" if leading else "no field has a decimal point"
        raise ValueError(
            f"{path}: looks like a table written with decimal commas and ',' between fields "
            f"({why}; first line {','.join(rows[0])[:60]!r}): the columns cannot be told apart. "
            "Save it with '.' as decimal mark, or with ';' between fields."
        )


def _parse_text(path: Path) -> tuple[list[str], list[str] | None, np.ndarray]:
    """Return (comment lines without the marker, header tokens or None, data (n, ncols))."""
    if not path.is_file():
        raise FileNotFoundError(f"reference file not found: {path}")
    comments: list[str] = []
    header: list[str] | None = None
    rows: list[list[float]] = []
    comma_tokens: list[list[str]] | None = []  # fields of ","-separated lines, for the check
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            s = raw.strip()
            if not s:
                continue
            if s.startswith(_COMMENT):
                comments.append(s.lstrip("#!% \t").rstrip())
                continue
            toks = _split_fields(s)
            if all(_is_number(t) for t in toks):
                rows.append([float(t) for t in toks])
                if comma_tokens is not None:
                    if "," in s and ";" not in s and "\t" not in s:
                        comma_tokens.append(toks)
                    else:
                        comma_tokens = None
            elif not rows and header is None:
                header = [t.strip("\"'") for t in toks]
            else:
                raise ValueError(
                    f"{path}: line {lineno} is not numeric ({s[:60]!r}); reference files must "
                    "hold numbers only after an optional header line (comments start with #)."
                )
    if not rows:
        raise ValueError(f"{path}: no numeric data found; expected columns energy, value(s).")
    if comma_tokens is not None:
        _check_decimal_commas(path, comma_tokens, header)
    ncols = {len(r) for r in rows}
    if len(ncols) != 1:
        raise ValueError(
            f"{path}: rows have different numbers of columns {sorted(ncols)}; fix the file."
        )
    data = np.asarray(rows, dtype=np.float64)
    if data.shape[1] < 2:
        raise ValueError(f"{path}: need at least 2 columns (energy, value), found 1.")
    if header is None:
        for c in reversed(comments):
            toks = [t for t in _SPLIT.split(c) if t]
            if len(toks) == data.shape[1] and not all(_is_number(t) for t in toks):
                header = toks
                break
    if header is not None and len(header) != data.shape[1]:
        raise ValueError(
            f"{path}: header has {len(header)} names but the data have {data.shape[1]} columns."
        )
    return comments, header, data


def _finish(path: Path, energy: np.ndarray, values: np.ndarray, names: list[str]):
    e, (v,), _ = sort_energies(energy, values)
    v = np.asarray(v, dtype=np.float64).reshape(e.size, -1)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{path}: reference values contain NaN/Inf; fix or remove those rows.")
    return e, v, names


def read_table(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a text/CSV table: energy + one (2 columns) or several reference columns.

    Returns
    -------
    energy : numpy.ndarray (T,) in eV
    values : numpy.ndarray (T, k)
    names : list of str
        File stem for a two-column file; header names (or ``stem_1..``) otherwise.
    """
    p = Path(path)
    _, header, data = _parse_text(p)
    k = data.shape[1] - 1
    if k == 1:
        names = [p.stem]
    elif header is not None:
        names = header[1:]
    else:
        names = [f"{p.stem}_{i + 1}" for i in range(k)]
    return _finish(p, data[:, 0], data[:, 1:], names)


def read_xdi(
    path: str | os.PathLike, column: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an XDI file (see module docstring for the column choice).

    Parameters
    ----------
    path : path-like
    column : str, optional
        Column name to use instead of the automatic choice.
    """
    p = Path(path)
    comments, header, data = _parse_text(p)
    cols: dict[int, tuple[str, str]] = {}
    for c in comments:
        m = re.match(r"column\.(\d+)\s*:\s*(\S+)\s*(\S*)", c, re.IGNORECASE)
        if m:
            cols[int(m.group(1)) - 1] = (m.group(2).lower(), m.group(3).lower())
    if cols:
        names = [cols.get(i, (f"col{i + 1}", ""))[0] for i in range(data.shape[1])]
    elif header is not None:
        names = [h.lower() for h in header]
    else:
        raise ValueError(f"{p}: XDI file without '# Column.N: name' lines; cannot pick columns.")
    idx = {n: i for i, n in enumerate(names)}
    if "energy" not in idx:
        raise ValueError(f"{p}: no 'energy' column among {names}.")
    energy = data[:, idx["energy"]]
    units = cols.get(idx["energy"], ("", ""))[1]
    if units == "kev":
        energy = energy * 1000.0
    if column is not None:
        if column.lower() not in idx:
            raise ValueError(f"{p}: column {column!r} not found; available: {names}.")
        y = data[:, idx[column.lower()]]
    else:
        y = None
        for n in _XDI_MU:
            if n in idx:
                y = data[:, idx[n]]
                break
        if y is None and "i0" in idx:
            it = next((n for n in _XDI_IT if n in idx), None)
            if it is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    y = np.log(data[:, idx["i0"]] / data[:, idx[it]])
            elif "ifluor" in idx:
                with np.errstate(divide="ignore", invalid="ignore"):
                    y = data[:, idx["ifluor"]] / data[:, idx["i0"]]
        if y is None:
            raise ValueError(
                f"{p}: no absorbance column (one of {list(_XDI_MU)}, or i0 with "
                f"itrans/ifluor); available: {names}. Pass column=NAME."
            )
    return _finish(p, energy, y, [p.stem])


def read_athena_nor(
    path: str | os.PathLike, column: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an Athena ``.nor`` export; use ``norm`` (default) or ``column`` (e.g. ``"flat"``).

    If the chosen name occurs once, one reference named after the file stem is returned. If no
    ``norm``/``flat`` column exists (Athena's multi-group export, one column per group), every
    non-energy column is returned under its header name.
    """
    p = Path(path)
    _, header, data = _parse_text(p)
    if header is None:
        raise ValueError(
            f"{p}: no header line naming the columns (e.g. '# energy norm flat ...'); "
            "re-export from Athena with column labels."
        )
    low = [h.lower() for h in header]
    want = [column.lower()] if column else ["norm", "flat"]
    for w in want:
        hits = [i for i, n in enumerate(low) if n == w]
        if hits:
            return _finish(p, data[:, 0], data[:, hits[0]], [p.stem])
    if column:
        raise ValueError(f"{p}: column {column!r} not found; available: {header}.")
    # energy-like columns only (a spectrum named "Eu2O3" or "Fe2" is kept)
    keep = [i for i, n in enumerate(low) if i > 0 and not _ENERGY_NAME.match(n)]
    if not keep:
        raise ValueError(f"{p}: no spectrum columns in {header}; pass column=NAME.")
    return _finish(p, data[:, 0], data[:, keep], [header[i] for i in keep])


def _common_grid(parts: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Identical grids: that grid; else the first one's energies inside the overlap of all."""
    e_first = parts[0][1]
    if all(e.shape == e_first.shape and np.array_equal(e, e_first) for _, e in parts):
        return e_first
    lo = max(e[0] for _, e in parts)
    hi = min(e[-1] for _, e in parts)
    if not lo < hi:
        raise ValueError(
            "the references do not overlap in energy: "
            + ", ".join(f"{n}: {e[0]:.1f}-{e[-1]:.1f} eV" for n, e in parts)
            + "; check units or use references of the same edge."
        )
    return e_first[(e_first >= lo) & (e_first <= hi)]


def read_reference_file(
    path: str | os.PathLike, column: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one reference file, choosing the reader from its content
    (:func:`bigxanes.references.catalog.detect_format`).

    Athena projects give every group's normalized spectrum (``norm`` of
    :func:`read_athena_project`) on the first group's energies inside the overlap of all groups;
    Demeter multi-column exports give every column as stored. ``column`` picks one column
    (XDI/``.nor``/table) or one reference by name (projects, multi-column exports).
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt in ("athena-project", "demeter-multicolumn"):
        recs = list_references(p)
        if column is not None:
            recs = [recs[i] for i in select_references([r.name for r in recs], [column])]
        if fmt == "demeter-multicolumn":
            return recs[0].energy, np.stack([r.mu for r in recs], axis=1), [r.name for r in recs]
        E = _common_grid([(r.name, r.energy) for r in recs])
        A = np.stack([interpolate_reference(r.energy, r.norm, E) for r in recs], axis=1)
        return E, A, [r.name for r in recs]
    if fmt == "xdi":
        return read_xdi(p, column)
    if fmt == "athena-nor":
        return read_athena_nor(p, column)
    if column is not None:
        e, v, names = read_table(p)
        if column not in names:
            raise ValueError(f"{p}: column {column!r} not found; available: {names}.")
        return e, v[:, [names.index(column)]], [column]
    return read_table(p)


def read_references(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    energy: np.ndarray | None = None,
    components: Iterable[str] | None = None,
    normalize: bool = False,
    union_grid: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read 1..n reference files into one ``(T, L)`` matrix.

    Parameters
    ----------
    paths : path-like or sequence of path-like
        Files in any supported format (detected by content); each gives one or more references
        (:func:`bigxanes.references.catalog.list_references`).
    energy : array_like, optional
        Target energies (eV or keV). If given, every reference is linearly interpolated onto it
        (:func:`bigxanes.energy.interpolate_reference`, ValueError when not covered). If not,
        references on identical grids are stacked as they are; otherwise they are interpolated
        onto the first reference's energies inside the overlap of the selected references.
    components : iterable of str, optional
        Names to keep, in this order, matched as :func:`select_references` does (exact, then
        case-insensitive, then unique prefix; the error lists the available names).
    normalize : bool
        Edge-step normalize each reference on its own grid first, for raw mu(E) data: the
        flattened spectrum ``flat`` of :func:`bigxanes.normalize.normalize_spectra` (default
        windows), comparable with already-normalized reference files (post-edge around 1).
        Athena project groups are always normalized, with their own parameters; files that
        declare raw mu(E) (XDI ``mu``/``mutrans`` columns, Demeter "mu(E)" exports) are
        normalized by default (the ``norm`` of :func:`list_references`, what
        ``bigxanes info FILE`` describes).

    union_grid : bool
        Without ``energy``: put the references on the union of their own energies inside the
        overlap of all (lossless: every reference's piecewise-linear curve is unchanged), instead
        of the first reference's energies. For references that are shifted and interpolated
        again later (``unmix --refs``).

    Returns
    -------
    energy : numpy.ndarray (T,) in eV
    A : numpy.ndarray (T, L)
    names : list of str
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("no reference files given; pass at least one path.")
    recs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for p in paths:
        for r in list_references(p):
            if r.params.get("format") == "athena-project":
                v = r.norm
            elif normalize:
                v = normalize_spectra(r.energy, r.mu).flat
                if not np.all(np.isfinite(v)):
                    raise ValueError(f"{p}: normalization failed (no edge step); check the data.")
            else:
                v = r.norm  # as stored, or normalized when the file holds raw mu(E)
            recs.append((r.name, r.energy, v))
    names = [n for n, _, _ in recs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(
            f"duplicate reference names {dup}; rename the files or header columns so each "
            "reference has a unique name."
        )
    if components is not None:
        recs = [recs[i] for i in select_references(names, list(components))]
        names = [n for n, _, _ in recs]
    if energy is not None:
        E = as_ev(energy)
    else:
        E = _common_grid([(n, e) for n, e, _ in recs])
        if union_grid:
            allE = np.unique(np.concatenate([e for _, e, _ in recs]))
            E = allE[(allE >= E[0]) & (allE <= E[-1])]
    A = np.stack([interpolate_reference(e, v, E) for _, e, v in recs], axis=1)
    if A.ndim == 3:
        A = A[:, :, 0]
    return E, A, names


NI_FILES = {"Ni0": "ni_metal_rt.xdi", "Ni2+": "ref_NiO.txt", "Ni3+": "ref_LiNiO2.txt"}


def load_ni_references(
    folder: str | os.PathLike, energy: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Real Ni K-edge references: Ni0 (Ni foil), Ni2+ (NiO), Ni3+ (LiNiO2).

    ``ref_NiO.txt`` and ``ref_LiNiO2.txt`` are already edge-step normalized (energies in keV,
    converted); ``ni_metal_rt.xdi`` holds raw ``mutrans`` and is normalized here with
    :func:`bigxanes.normalize.normalize_spectra` (larch-like defaults: e0 = max derivative,
    pre-edge line on -50..-10 eV, quadratic post-edge from +50 eV to the end) and flattened
    (``flat``), so that like the other two its post-edge oscillates around 1. All three are
    interpolated onto ``energy`` if given, else onto the NiO energies inside the overlap of
    the three files (8200-9000 eV).

    Returns
    -------
    energy : numpy.ndarray (T,) eV
    A : numpy.ndarray (T, 3), columns Ni0, Ni2+, Ni3+
    names : ``["Ni0", "Ni2+", "Ni3+"]``
    """
    d = Path(folder)
    missing = [f for f in NI_FILES.values() if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{d}: missing Ni reference files {missing}.")
    e0_, v0, _ = read_xdi(d / NI_FILES["Ni0"])
    v0 = normalize_spectra(e0_, v0[:, 0]).flat
    e2, v2, _ = read_table(d / NI_FILES["Ni2+"])
    e3, v3, _ = read_table(d / NI_FILES["Ni3+"])
    if energy is None:
        lo = max(e0_[0], e2[0], e3[0])
        hi = min(e0_[-1], e2[-1], e3[-1])
        E = e2[(e2 >= lo) & (e2 <= hi)]
    else:
        E = as_ev(energy)
    A = np.stack(
        [
            interpolate_reference(e0_, v0, E),
            interpolate_reference(e2, v2[:, 0], E),
            interpolate_reference(e3, v3[:, 0], E),
        ],
        axis=1,
    )
    check_references(A)
    return E, A, list(NI_FILES)

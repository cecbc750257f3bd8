"""Athena (Demeter) project files ``.prj``: every group as a reference record.

File layout (gzip-compressed text, also read uncompressed)::

    # Athena project file -- Demeter version 0.9.20
    $old_group = 'uhcs';
    @args = ('label','Fe foil','bkg_e0',7112,'bkg_eshift','5.81',...,'xdi_mono',{},...);
    @x = ('6911.98862','6916.99353',...);
    @y = ('0.0484','0.0460',...);
    [record]

The Perl lists are read by a small tokenizer (quoted strings, numbers, barewords, nested
``[...]``/``{...}``, ``=>``); nothing is evaluated.

What a record holds, and why
----------------------------
* ``energy = @x + bkg_eshift``: Athena stores the energies as measured and applies
  ``bkg_eshift`` (the calibration shift the analyst set, e.g. aligning to a foil) on the fly;
  ``bkg_e0`` and the window parameters refer to the *shifted* energies.
* ``mu``: ``@y`` when ``is_xmu`` is 1 (raw mu(E)). Groups holding only detector channels
  (``is_xmu`` 0 with ``@i0``/``@signal``) give ``ln(i0/signal)`` (transmission, ``ln`` 1) or
  ``signal/i0``; ``chi(k)``/already-normalized groups (``is_chi``, ``is_nor``) are handled as
  documented in :func:`read_athena_project`.
* ``norm``/``flat``: edge-step normalized with **the group's own parameters**
  (``bkg_e0``, ``bkg_pre1/2``, ``bkg_nor1/2``, ``bkg_nnorm``) using bigxanes'
  :func:`bigxanes.normalize.normalize_spectra`, which is the same pre-edge line / post-edge
  polynomial procedure as Athena and larch (``pre_edge``). The group's parameters are used,
  not bigxanes' defaults, because the analyst chose them per standard in Athena (windows that
  avoid glitches, an ``e0`` placed by hand, e.g. Fe foil at 7112 eV): the reference then has the
  normalization the user sees in Athena. Athena's ``bkg_nnorm`` counts polynomial terms
  (3 = quadratic), so the post-edge degree is ``bkg_nnorm - 1``. ``flat`` is the flattened
  spectrum (Athena's default display when ``bkg_flatten`` is 1); ``norm`` is the
  unflattened one. When ``bkg_fixstep`` is 1 the stored ``bkg_step`` is used as the edge step.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..normalize import normalize_spectra

__all__ = ["ReferenceRecord", "read_athena_project", "is_athena_project", "parse_perl_list"]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?P<arrow>=>)"
    r"|(?P<punct>[\[\]{}(),])|(?P<word>[^\s\[\]{}(),'\"=]+))",
    re.S,
)


@dataclass
class ReferenceRecord:
    """One reference spectrum read from a file.

    Attributes
    ----------
    name : str
        Label as the user sees it (Athena's group ``label``; column name; file stem).
    energy : numpy.ndarray (T,)
        Energies in eV, strictly increasing, with the file's energy shift applied.
    mu : numpy.ndarray (T,)
        The spectrum as stored (raw mu(E) for Athena groups).
    norm : numpy.ndarray (T,)
        Edge-step normalized spectrum, flattened (``flat``) when the source says so
        (Athena's ``bkg_flatten``) — what analysts compare with. Equal to ``mu`` for files that
        already hold normalized spectra.
    e0 : float
        Edge energy in eV (Athena's ``bkg_e0``; else maximum of the derivative).
    eshift : float
        Energy shift in eV already added to ``energy`` (Athena's ``bkg_eshift``; else 0).
    edge_step : float
        Edge step used for ``norm`` (1.0 for already-normalized data).
    source : str
        File (and group) it came from.
    params : dict
        Raw key/value parameters from the file (Athena's ``@args``).
    """

    name: str
    energy: np.ndarray
    mu: np.ndarray
    norm: np.ndarray
    e0: float
    eshift: float = 0.0
    edge_step: float = 1.0
    source: str = ""
    params: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def energy_range(self) -> tuple[float, float]:
        """``(first, last)`` energy in eV."""
        return float(self.energy[0]), float(self.energy[-1])


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse Perl list near {text[pos : pos + 40]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind is None:
            continue
        val = m.group(kind)
        if kind == "str":
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        out.append((kind, val))
    return out


def _parse(tokens: list[tuple[str, str]], i: int) -> tuple[Any, int]:
    kind, val = tokens[i]
    if kind == "punct" and val in "[({":
        close = {"[": "]", "(": ")", "{": "}"}[val]
        items: list[Any] = []
        i += 1
        while not (tokens[i][0] == "punct" and tokens[i][1] == close):
            if tokens[i][0] in ("arrow",) or tokens[i] == ("punct", ","):
                i += 1
                continue
            item, i = _parse(tokens, i)
            items.append(item)
        i += 1
        if val == "{":
            return dict(zip(items[0::2], items[1::2], strict=False)), i
        return items, i
    if kind == "word":
        try:
            return float(val), i + 1
        except ValueError:
            return val, i + 1
    return val, i + 1


def parse_perl_list(text: str) -> list[Any]:
    """Parse a Perl list literal ``( 'a', 1, {...}, [...] )`` into Python objects.

    Strings stay strings (quoted numbers too), bare numbers become float, ``{}`` a dict,
    ``[]``/``()`` a list. Nothing is evaluated.
    """
    toks = _tokens(text)
    if not toks or toks[0] != ("punct", "("):
        raise ValueError("a Perl list must start with '('")
    value, _ = _parse(toks, 0)
    return value


def _read_text(path: Path) -> str:
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def is_athena_project(path: str | os.PathLike) -> bool:
    """True when the file's content is an Athena project (gzip or plain), whatever its suffix."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(p, "rb") as fh:
                head = fh.read(4096)
    except (OSError, EOFError):
        return False
    text = head.decode("utf-8", errors="replace")
    return "Athena project file" in text or "$old_group" in text


_NARROW_POST = 100.0  # eV; a quadratic on a shorter post-edge window extrapolates wildly to e0
_STATEMENT = re.compile(r"^(?P<sigil>[$@])(?P<name>\w+)\s*=\s*", re.M)


def _groups(text: str) -> list[dict[str, str]]:
    """Split into groups: ``{'old_group': name, 'args': '(...)', 'x': '(...)', ...}``."""
    groups: list[dict[str, str]] = []
    matches = list(_STATEMENT.finditer(text))
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        body = text[m.end() : end].strip()
        body = body.split("\n[record]")[0].strip()
        if body.endswith(";"):
            body = body[:-1].rstrip()
        name = m.group("name")
        if m.group("sigil") == "$" and name == "old_group":
            groups.append({"old_group": body.strip("'\"")})
        elif groups and m.group("sigil") == "@":
            groups[-1][name] = body
    return groups


def _num(v: Any, default: float) -> float:
    try:
        out = float(v)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def _array(path: Path, label: str, key: str, body: str) -> np.ndarray:
    try:
        vals = parse_perl_list(body)
        arr = np.asarray([float(v) for v in vals], dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{path}: group {label!r}: @{key} is not a list of numbers ({exc})."
        ) from None
    return arr


def read_athena_project(path: str | os.PathLike) -> list[ReferenceRecord]:
    """Read every group of an Athena project file as a :class:`ReferenceRecord`.

    Per group (see the module docstring for the reasons):

    1. ``energy = @x + bkg_eshift`` (eV; sorted, duplicate energies are an error).
    2. ``mu = @y`` if ``is_xmu`` is 1; else from ``@i0`` and ``@signal``: ``ln(i0/signal)``
       when ``ln`` is 1, ``signal/i0`` otherwise. A group that is already normalized
       (``is_nor`` 1) is kept as it is (``norm = mu``). ``chi(k)`` groups (``is_chi`` 1) and
       groups without usable arrays are skipped (they are not XANES references).
    3. ``norm``: :func:`bigxanes.normalize.normalize_spectra` with ``e0 = bkg_e0``,
       ``pre1, pre2 = bkg_pre1, bkg_pre2``, ``norm1, norm2 = bkg_nor1, bkg_nor2``,
       ``nnorm = bkg_nnorm - 1`` (clipped to 0..2, and to 1 when the post-edge window is
       narrower than 100 eV: a quadratic on ~45 eV extrapolated to ``e0`` gives edge steps
       40 % off Athena's stored ``bkg_step`` on real files); the flattened spectrum when
       ``bkg_flatten`` is 1 (Athena's default). If ``bkg_fixstep`` is 1 the stored
       ``bkg_step`` is the edge step.

    Parameters
    ----------
    path : path-like
        ``.prj`` file, gzip-compressed or plain text.

    Returns
    -------
    list of ReferenceRecord
        In file order; ``name`` is the group's label (unique: repeated labels get ``" (2)"``…).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Not an Athena project, no group with data, or a group whose arrays cannot be trusted
        (lengths differ, non-numeric values, no edge step).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"reference file not found: {p}")
    if not is_athena_project(p):
        raise ValueError(f"{p}: not an Athena project file (no '$old_group' records).")
    text = _read_text(p)
    records: list[ReferenceRecord] = []
    seen: dict[str, int] = {}
    for g in _groups(text):
        if "args" not in g:
            continue
        raw = parse_perl_list(g["args"])
        params = {str(k): v for k, v in zip(raw[0::2], raw[1::2], strict=False)}
        label = str(params.get("label") or g["old_group"]).strip()
        if _num(params.get("is_chi"), 0) == 1 or "x" not in g:
            continue
        x = _array(p, label, "x", g["x"])
        if _num(params.get("is_xmu"), 1) == 1 or _num(params.get("is_nor"), 0) == 1:
            if "y" not in g:
                raise ValueError(f"{p}: group {label!r} has no @y array.")
            mu = _array(p, label, "y", g["y"])
        elif "i0" in g and "signal" in g:
            i0 = _array(p, label, "i0", g["i0"])
            sig = _array(p, label, "signal", g["signal"])
            with np.errstate(divide="ignore", invalid="ignore"):
                mu = np.log(i0 / sig) if _num(params.get("ln"), 0) == 1 else sig / i0
        else:
            continue
        if mu.shape != x.shape or x.size < 5:
            raise ValueError(
                f"{p}: group {label!r}: @x has {x.size} values but the spectrum has {mu.size}; "
                "the file is damaged."
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(mu))):
            raise ValueError(f"{p}: group {label!r} holds NaN/Inf values; the file is damaged.")
        eshift = _num(params.get("bkg_eshift"), 0.0)
        energy = x + eshift
        order = np.argsort(energy, kind="stable")
        energy, mu = energy[order], mu[order]
        if np.any(np.diff(energy) <= 0):
            raise ValueError(f"{p}: group {label!r} has repeated energies; the file is damaged.")
        if _num(params.get("is_nor"), 0) == 1:
            norm = mu.copy()
            e0 = _num(params.get("bkg_e0"), float("nan"))
            step = 1.0
        else:
            e0_par = _num(params.get("bkg_e0"), float("nan"))
            e0_arg = e0_par if energy[0] < e0_par < energy[-1] else None
            nn = int(np.clip(_num(params.get("bkg_nnorm"), 3) - 1, 0, 2))
            nor1 = _num(params.get("bkg_nor1"), 150.0)
            top = energy[-1] - (e0_par if e0_arg is not None else energy[0])
            nor2 = min(_num(params.get("bkg_nor2"), np.inf), top)
            if nor2 - nor1 < _NARROW_POST:
                nn = min(nn, 1)
            res = normalize_spectra(
                energy,
                mu,
                e0=e0_arg,
                pre1=_num(params.get("bkg_pre1"), -150.0),
                pre2=_num(params.get("bkg_pre2"), -30.0),
                norm1=nor1,
                norm2=nor2,
                nnorm=nn,
            )
            e0 = float(res.e0)
            step = float(res.edge_step)
            fixed = _num(params.get("bkg_step"), float("nan"))
            if _num(params.get("bkg_fixstep"), 0) == 1 and fixed > 0:
                scale = step / fixed
                step = fixed
            else:
                scale = 1.0
            if not (np.isfinite(step) and step > 0):
                raise ValueError(
                    f"{p}: group {label!r}: no positive edge step with the group's own "
                    "pre/post-edge windows; check the group in Athena."
                )
            flat = _num(params.get("bkg_flatten"), 1) == 1
            norm = (res.flat if flat else res.norm) * scale
        n = seen.get(label, 0) + 1
        seen[label] = n
        name = label if n == 1 else f"{label} ({n})"
        records.append(
            ReferenceRecord(
                name=name,
                energy=energy,
                mu=mu,
                norm=np.asarray(norm, dtype=np.float64),
                e0=e0,
                eshift=eshift,
                edge_step=step,
                source=f"{p}:{g['old_group']}",
                params=params,
            )
        )
    if not records:
        raise ValueError(f"{p}: no mu(E) groups found in this Athena project.")
    return records

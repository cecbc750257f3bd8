"""Named channel layouts: many per-pixel quantities stacked in one array ``(channels, ...)``.

``map_blocks`` returns one array per call, so each block function stacks its outputs along a
channel axis; a layout names the channel ranges (docs/design.md, "Both executors").
"""

from __future__ import annotations


class ChannelLayout:
    """Base for layouts: subclasses define ``sizes`` (name -> channel count, in order)."""

    @property
    def sizes(self) -> dict[str, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def slices(self) -> dict[str, slice]:
        """Channel range of each named quantity."""
        out, i = {}, 0
        for name, n in self.sizes.items():
            out[name] = slice(i, i + n)
            i += n
        return out

    @property
    def n_channels(self) -> int:
        return sum(self.sizes.values())

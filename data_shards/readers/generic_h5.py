"""HDF5 in a layout described by options only (``generic_h5``).

Options (``SourceConfig.options``), dataset paths relative to the root, or to each group with ``groups``:

- ``numbers`` (required): ``(N,)`` shared by all structures or ``(M, N)`` per structure
- ``padding``: ``true`` when per-structure numbers are zero-padded to a common length: Z=0 entries are then dropped
  with the matching positions and forces. Default ``false``: a Z=0 is an error (``bad_atomic_number``), never a
  silently deleted atom
- ``positions`` (required): ``(M, N, 3)``
- ``cell``: ``(3, 3)`` or ``(M, 3, 3)``; ``pbc``: ``(3,)`` or ``(M, 3)`` (default: periodic when a cell is given)
- ``charge`` / ``multiplicity``: ``(M,)`` or scalar dataset, or an int constant
- ``groups``: glob of groups (``'*'``, ``'subset/*'``), each holding the paths above (one molecule per group)

Level keys (energy, forces/gradient, valid) are dataset paths relative to the root/group; ``valid`` is a
boolean/int ``(M,)`` dataset where False/0 marks the level's labels as missing.
"""

from __future__ import annotations

from typing import Any

from polyfid.data_shards.errors import SourceError
from polyfid.data_shards.readers.common import H5GroupReader, H5Layout, resolve_options
from polyfid.data_shards.sources import SourceConfig

DEFAULTS: dict[str, Any] = {
    "numbers": None,
    "positions": None,
    "cell": None,
    "pbc": None,
    "charge": None,
    "multiplicity": None,
    "groups": None,
    "padding": False,
}


class GenericH5Reader(H5GroupReader):
    """Reader for the ``generic_h5`` format."""

    def layout_for(self, source: SourceConfig) -> tuple[H5Layout, str | None]:
        """The layout and group pattern given by the source's options; SourceError when a required one is missing."""
        opts = resolve_options(source, DEFAULTS)
        missing = [k for k in ("numbers", "positions") if not opts[k]]
        if missing:
            raise SourceError(source.name, f"format 'generic_h5' needs option(s) {missing} (dataset paths)")
        layout = H5Layout(
            positions=opts["positions"],
            numbers=(opts["numbers"],),
            cell=opts["cell"],
            pbc=opts["pbc"],
            charge=opts["charge"],
            multiplicity=opts["multiplicity"],
            drop_padding=_flag(source, "padding", opts["padding"]),
        )
        return layout, opts["groups"]


def _flag(source: SourceConfig, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SourceError(source.name, f"option {name!r} must be true or false, not {value!r}")
    return value

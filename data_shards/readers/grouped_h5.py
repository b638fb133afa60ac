"""ANI-style and SPICE-style HDF5: one group per molecule holding `numbers (N,)` (or per conformer
`(M, N)`; integers or element symbols), `positions (M, N, 3)` and per-level datasets `(M,)` / `(M, N, 3)`.

The two formats share this reader and differ only in their option presets (see :data:`PRESETS`).
Options (``SourceConfig.options``):

- ``positions``: coordinates dataset name (ANI ``coordinates``, SPICE ``conformations``)
- ``numbers``: atomic-numbers dataset name, or a list of candidates tried in order
  (ANI ``[atomic_numbers, species]``, SPICE ``atomic_numbers``)
- ``groups``: glob of the molecule groups (``'*'`` = top-level groups, ``'s66x8/*'``); default ``'**'`` =
  every group holding the positions dataset, at any depth (COMP6 nests ``s66x8/molNN``)
- ``charge`` / ``multiplicity``: dataset name (scalar or per conformer) or an int constant
- ``charge_from_smiles``: dataset holding a SMILES string; the total charge is the sum of its formal charges
  (SPICE: ``smiles``; used when ``charge`` gives none)
"""

from __future__ import annotations

from typing import Any

from polyfid.data_shards.readers.common import H5GroupReader, H5Layout, resolve_options
from polyfid.data_shards.sources import SourceConfig

_COMMON: dict[str, Any] = {"groups": "**", "charge": None, "multiplicity": None, "charge_from_smiles": None}
PRESETS: dict[str, dict[str, Any]] = {
    "ani_h5": {**_COMMON, "positions": "coordinates", "numbers": ["atomic_numbers", "species"]},
    "spice_h5": {**_COMMON, "positions": "conformations", "numbers": "atomic_numbers", "charge_from_smiles": "smiles"},
}


class GroupedH5Reader(H5GroupReader):
    """Reader for the ``ani_h5`` and ``spice_h5`` formats."""

    def layout_for(self, source: SourceConfig) -> tuple[H5Layout, str]:
        """The source's group layout and group pattern: its format's preset overridden by its options."""
        opts = resolve_options(source, PRESETS[source.format])
        numbers = opts["numbers"]
        layout = H5Layout(
            positions=opts["positions"],
            numbers=(numbers,) if isinstance(numbers, str) else tuple(numbers),
            charge=opts["charge"],
            multiplicity=opts["multiplicity"],
            charge_from_smiles=opts["charge_from_smiles"],
        )
        return layout, opts["groups"]

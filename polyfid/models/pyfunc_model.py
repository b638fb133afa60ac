"""The MLflow pyfunc face of a polyfid model package ("models from code": nothing is pickled).

`mlflow.pyfunc.load_model(uri).predict(df, params={"level": ...})` (the level is required: there is no default
head): one row per structure with columns
`numbers` (atomic numbers), `positions` (Angstrom, n x 3) and optional `cell` (3 x 3, periodic when given);
returns `energy` (eV) and `forces` (eV/A, n x 3) per row. The package itself is the artefact `package`, so the
registered version also loads into the ASE calculator (`PolyfidCalculator`).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np


class PolyfidPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from polyfid.models.calculator import PolyfidCalculator
        from polyfid.models.package import load_package

        self.package = load_package(context.artifacts["package"])
        self.calculator_cls = PolyfidCalculator

    # no type hints here: MLflow reads predict's hints as an input schema (a pandas frame of structures has none)
    def predict(self, context, model_input, params=None):
        import pandas as pd
        from ase import Atoms

        level = (params or {}).get("level")
        if not level:  # never a silent default head: a level of theory is a choice
            raise ValueError(f"predict needs params={{'level': ...}}, one of the heads {self.package.heads}")
        calc = self.calculator_cls(self.package, level=level)
        rows = []
        for _, row in model_input.iterrows():
            cell = row.get("cell") if "cell" in model_input.columns else None
            atoms = Atoms(numbers=np.asarray(row["numbers"], dtype=int),
                          positions=np.asarray(list(row["positions"]), dtype=float).reshape(-1, 3),
                          cell=None if cell is None else np.asarray(list(cell), dtype=float).reshape(3, 3),
                          pbc=cell is not None)  # fmt: skip
            atoms.calc = calc
            rows.append({"energy": float(atoms.get_potential_energy()), "forces": atoms.get_forces().tolist()})
        return pd.DataFrame(rows)


mlflow.models.set_model(PolyfidPyfunc())

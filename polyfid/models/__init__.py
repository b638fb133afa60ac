"""The model layer: pair finding, HIP-NN, HIP-NN-TS, HIP-HOP-NN, multi-fidelity energy heads, forces by autograd."""

from polyfid.models.graph import Graph, build_graph
from polyfid.models.heads import EnergyHead, EnergyHeads, UnknownHeadError, hierarchicality
from polyfid.models.hiphop import HipHop, HipHopConfig, HipnnTS, HipnnTSConfig, TensorInteractionLayer
from polyfid.models.hipnn import Hipnn, HipnnConfig, envsum
from polyfid.models.model import Backbone, ModelOutput, PolyfidModel, build_model
from polyfid.models.sensitivity import InverseGaussianSensitivity, cos2_cutoff
from polyfid.models.species import SpeciesIndex, UnknownElementError

__all__ = [
    "Backbone",
    "EnergyHead",
    "EnergyHeads",
    "Graph",
    "HipHop",
    "HipHopConfig",
    "Hipnn",
    "HipnnConfig",
    "HipnnTS",
    "HipnnTSConfig",
    "InverseGaussianSensitivity",
    "ModelOutput",
    "PolyfidModel",
    "SpeciesIndex",
    "TensorInteractionLayer",
    "UnknownElementError",
    "UnknownHeadError",
    "build_graph",
    "build_model",
    "cos2_cutoff",
    "envsum",
    "hierarchicality",
]

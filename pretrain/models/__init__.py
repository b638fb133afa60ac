"""The model layer: pair finding, HIP-NN, multi-fidelity energy heads, forces by autograd."""

from pretrain.models.graph import Graph, build_graph
from pretrain.models.heads import EnergyHead, EnergyHeads, UnknownHeadError, hierarchicality
from pretrain.models.hipnn import Hipnn, HipnnConfig, envsum
from pretrain.models.model import Backbone, ModelOutput, PolyfidModel, build_model
from pretrain.models.sensitivity import InverseGaussianSensitivity, cos2_cutoff
from pretrain.models.species import SpeciesIndex, UnknownElementError

__all__ = [
    "Backbone",
    "EnergyHead",
    "EnergyHeads",
    "Graph",
    "Hipnn",
    "HipnnConfig",
    "InverseGaussianSensitivity",
    "ModelOutput",
    "PolyfidModel",
    "SpeciesIndex",
    "UnknownElementError",
    "UnknownHeadError",
    "build_graph",
    "build_model",
    "cos2_cutoff",
    "envsum",
    "hierarchicality",
]

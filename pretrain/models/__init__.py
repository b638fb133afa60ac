"""The model layer: pair finding, HIP-NN, HIP-NN-TS, HIP-HOP-NN, multi-fidelity energy heads, forces by autograd."""

from pretrain.models.graph import Graph, build_graph
from pretrain.models.heads import EnergyHead, EnergyHeads, UnknownHeadError, hierarchicality
from pretrain.models.hiphop import HipHop, HipHopConfig, HipnnTS, HipnnTSConfig, TensorInteractionLayer
from pretrain.models.hipnn import Hipnn, HipnnConfig, envsum
from pretrain.models.model import Backbone, ModelOutput, PolyfidModel, build_model
from pretrain.models.sensitivity import InverseGaussianSensitivity, cos2_cutoff
from pretrain.models.species import SpeciesIndex, UnknownElementError

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

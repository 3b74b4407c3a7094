"""Models and objectives of decentjax, as pure functions of a params pytree."""

from core import python_version  # noqa: F401 - checks the Python version first.
from core.loss_inputs import Task, Variables
from models.conv_lowering import conv_as_matmul, convs_as_matmuls
from models.nets import CNN, MLP, Linear, Model, PatchConv, cnn, linear, mlp
from models.nnx_model import NnxModel, from_nnx
from models.objectives import (
    Objective,
    least_squares,
    logistic_regression,
    nonconvex_logistic_regression,
    smoothness_least_squares,
    smoothness_logistic,
    softmax_cross_entropy,
)

__all__ = [
    "CNN",
    "MLP",
    "NnxModel",
    "Linear",
    "Model",
    "Objective",
    "PatchConv",
    "Task",
    "Variables",
    "cnn",
    "conv_as_matmul",
    "convs_as_matmuls",
    "from_nnx",
    "least_squares",
    "linear",
    "logistic_regression",
    "mlp",
    "nonconvex_logistic_regression",
    "smoothness_least_squares",
    "smoothness_logistic",
    "softmax_cross_entropy",
]

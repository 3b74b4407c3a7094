"""Models and objectives of decentjax, as pure functions of a params pytree."""

from decentjax.core import python_version  # noqa: F401 - checks the Python version first.
from decentjax.core.conv_lowering import conv_as_matmul, convs_as_matmuls, native_convs
from decentjax.core.loss_inputs import Task, Variables
from decentjax.models.augment import random_crop_flip
from decentjax.models.lenet import LeNet5, lenet5
from decentjax.models.nets import CNN, MLP, Linear, Model, PatchConv, cnn, linear, mlp
from decentjax.models.nnx_model import NnxModel, from_nnx
from decentjax.models.objectives import (
    Objective,
    least_squares,
    logistic_regression,
    nonconvex_logistic_regression,
    smoothness_least_squares,
    smoothness_logistic,
    softmax_cross_entropy,
)
from decentjax.models.resnet import ResNet, resnet20

__all__ = [
    "CNN",
    "LeNet5",
    "MLP",
    "NnxModel",
    "Linear",
    "Model",
    "Objective",
    "PatchConv",
    "Task",
    "Variables",
    "ResNet",
    "cnn",
    "conv_as_matmul",
    "convs_as_matmuls",
    "native_convs",
    "from_nnx",
    "least_squares",
    "lenet5",
    "linear",
    "logistic_regression",
    "mlp",
    "nonconvex_logistic_regression",
    "random_crop_flip",
    "resnet20",
    "smoothness_least_squares",
    "smoothness_logistic",
    "softmax_cross_entropy",
]

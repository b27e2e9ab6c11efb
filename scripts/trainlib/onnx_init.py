"""Warm-start a network from its own exported ONNX file.

The exporter folds each BatchNorm into the convolution before it, so an exported model has no
BatchNorm weights to give back. The folded weights go to the convolutions, and each BatchNorm is set
to pass its input through: exactly in eval mode, and nearly in train mode, where its scale and shift
are set from the statistics of its input over a calibration batch (so that normalising by the batch
statistics undoes itself on batches like it, and training starts from the exported function).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def read_onnx_weights(path: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """The graph of an ONNX file and its initializers as tensors."""
    import onnx  # noqa: PLC0415 - only needed here
    from onnx import numpy_helper  # noqa: PLC0415

    graph = onnx.load(str(path)).graph
    weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    return graph, weights


def conv_nodes(graph: Any) -> list[Any]:
    """The graph's Conv nodes, in graph order (the order ``load_folded_convs`` matches them in)."""
    return [n for n in graph.node if n.op_type == "Conv"]


def _running_stats(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert bn.running_mean is not None and bn.running_var is not None
    return bn.running_mean, bn.running_var


def _watch_inputs(
    model: nn.Module, watched: list[nn.Module], record: Callable[[nn.Module, tuple[torch.Tensor, ...]], None],
    example: torch.Tensor,
) -> None:  # fmt: skip
    """One eval-mode forward pass of ``example`` with ``record`` called on each watched module's inputs."""
    hooks = [module.register_forward_pre_hook(record) for module in watched]
    try:
        with torch.no_grad():
            model.eval()
            model(example)
    finally:
        for hook in hooks:
            hook.remove()


def _convs_in_call_order(model: nn.Module, example: torch.Tensor) -> list[nn.Conv2d]:
    """Each Conv2d once, in the order a forward pass calls it (the order of an exported graph)."""
    order: list[nn.Conv2d] = []

    def record(module: nn.Module, _inputs: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, nn.Conv2d) and module not in order:
            order.append(module)

    _watch_inputs(model, [m for m in model.modules() if isinstance(m, nn.Conv2d)], record, example)
    return order


def _batchnorm_after(model: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """The BatchNorm registered right after each convolution that has one (Conv, BN, ... blocks)."""
    modules = list(model.modules())
    return {
        m: nxt
        for m, nxt in zip(modules, modules[1:], strict=False)
        if isinstance(m, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d)
    }


def load_folded_convs(
    model: nn.Module, nodes: list[Any], weights: dict[str, torch.Tensor], calibration: torch.Tensor
) -> None:
    """Copy the weights of the ONNX Conv ``nodes`` into ``model``'s Conv2d layers, matched in call order,
    and set the BatchNorm after each convolution to pass through (see the module docstring).

    ``calibration`` is a batch of training inputs: it fixes the call order and the BatchNorm statistics.
    Convolutions without a BatchNorm after them (heads) get their own bias. Other parameters (linear
    layers, learnt embeddings) are the caller's to copy.
    """
    convs = _convs_in_call_order(model, calibration)
    if len(convs) != len(nodes):
        raise ValueError(f"the ONNX graph has {len(nodes)} convolutions, the network {len(convs)}")
    norms = _batchnorm_after(model)
    with torch.no_grad():
        for conv, node in zip(convs, nodes, strict=True):
            weight = weights[node.input[1]]
            if weight.shape != conv.weight.shape:
                raise ValueError(f"{node.name}: weight {tuple(weight.shape)}, network {tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            bias = weights[node.input[2]] if len(node.input) > 2 else torch.zeros(conv.out_channels)
            bn = norms.get(conv)
            if bn is None:
                if conv.bias is None:
                    raise ValueError(f"{node.name}: a bias in the graph, none in the network")
                conv.bias.copy_(bias)
                continue
            running_mean, running_var = _running_stats(bn)
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            running_mean.zero_()
            running_var.fill_(1.0 - bn.eps)


def calibrate_pass_through(model: nn.Module, calibration: torch.Tensor) -> None:
    """Set every pass-through BatchNorm's running statistics to those of its input over ``calibration``,
    with scale and shift chosen so the layer still passes its input through (eval mode exactly; train
    mode nearly, on batches like the calibration batch). Call once, after ``load_folded_convs`` and
    after any other weights are loaded."""
    norms = list(_batchnorm_after(model).values())
    stats: dict[nn.BatchNorm2d, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        assert isinstance(module, nn.BatchNorm2d)
        stats[module] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False))

    _watch_inputs(model, list(norms), record, calibration)
    with torch.no_grad():
        for bn in norms:
            mean, var = stats[bn]
            # Passing through, the layer gives x + b (b: the folded bias, in bn.bias). With the running
            # statistics of x, scale sqrt(var + eps) and shift mean + b it gives the same in eval mode.
            running_mean, running_var = _running_stats(bn)
            running_mean.copy_(mean)
            running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.add_(mean)
    model.train()


def load_onnx_convs(model: nn.Module, path: Path, calibration: torch.Tensor) -> None:
    """Warm-start a network made of convolutions (and BatchNorms) only, such as the plate detector."""
    graph, weights = read_onnx_weights(path)
    load_folded_convs(model, conv_nodes(graph), weights, calibration)
    calibrate_pass_through(model, calibration)
    logger.info("initialised from %s", path)

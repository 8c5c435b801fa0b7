"""Mini-batch Adam training with early stopping, on tensors that stay on one device.

The whole training tensor is moved to the device once; every epoch permutes it with one gather
and trains on contiguous slices of it. Losses are accumulated on the device and read back once
per epoch, so a CUDA run does not synchronise per batch.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ._util import check_int, check_positive

EVALUATION_BATCH_SIZE = 16384
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Environment switch read by LiquidHopfieldRegressor.fit (so Ray trials inherit it): unset, "0",
# "false" or "off" train eagerly; "1", "true" or "on" use torch.compile's default mode; a mode name
# from COMPILE_MODES selects that mode ("reduce-overhead" captures CUDA graphs on a GPU).
COMPILE_ENVIRONMENT_VARIABLE = "LIQUID_MEMORY_COMPILE"


class NonFiniteLossError(FloatingPointError):
    """The training or validation loss became NaN or infinite (the fit diverged)."""


EpochCallback = Callable[[dict], None]
StateCallback = Callable[[dict], None]


@dataclass
class TrainingResult:
    """What :func:`train_network` did: one record per epoch and the epoch whose weights were kept."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf

    @property
    def n_epochs(self) -> int:
        return len(self.history)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(n_threads)`` (None: leave the setting alone)."""
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(check_int("n_threads", n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_compile(compile: bool | str | None) -> str | None:
    """The torch.compile mode for a ``compile`` setting (None: train eagerly)."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return "default"
    if isinstance(compile, str) and compile in COMPILE_MODES:
        return compile
    raise ValueError(f"compile must be True, False or one of {', '.join(COMPILE_MODES)}; got {compile!r}")


def compile_from_environment() -> str | None:
    """The compile setting named by the ``LIQUID_MEMORY_COMPILE`` environment variable (None: eager)."""
    value = os.environ.get(COMPILE_ENVIRONMENT_VARIABLE, "").strip().lower()
    if value in ("", "0", "false", "off", "no"):
        return None
    if value in ("1", "true", "on", "yes"):
        return "default"
    try:
        return resolve_compile(value)
    except ValueError:
        raise ValueError(
            f"{COMPILE_ENVIRONMENT_VARIABLE}={value!r}: use 0/1 or one of {', '.join(COMPILE_MODES)}"
        ) from None


def predict_tensor(network: nn.Module, inputs: torch.Tensor, batch_size: int = EVALUATION_BATCH_SIZE) -> torch.Tensor:
    """Network outputs for every row of ``inputs``, in large batches without autograd."""
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            parts = [network(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)]
    finally:
        network.train(was_training)
    return torch.cat(parts) if parts else inputs.new_zeros(0)


def mean_squared_error(network: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """MSE of the network on (inputs, targets), one device sync."""
    predictions = predict_tensor(network, inputs)
    return float(torch.mean((predictions - targets) ** 2))


def _snapshot(network: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in network.state_dict().items()}


# Keys of the training state handed to ``state_callback`` and accepted as ``resume_state``.
TRAINING_STATE_KEYS = (
    "epoch",  # the last finished epoch (1-based)
    "network",  # network.state_dict() after that epoch
    "optimizer",  # optimizer.state_dict()
    "generator",  # state of the batch-order generator
    "best_state",  # weights of the best validation epoch so far
    "best_val_loss",
    "best_epoch",
    "epochs_without_improvement",
    "history",  # the epoch records so far
)


def train_network(
    network: nn.Module,
    X_train: torch.Tensor,
    y_train: torch.Tensor,
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    learning_rate: float = 1e-3,
    batch_size: int = 256,
    max_epochs: int = 100,
    patience: int | None = 10,
    grad_clip: float | None = None,
    weight_decay: float = 0.0,
    seed: int = 0,
    epoch_callback: EpochCallback | None = None,
    target_scale: float = 1.0,
    compile: bool | str | None = False,
    state_callback: StateCallback | None = None,
    resume_state: dict | None = None,
) -> TrainingResult:
    """Train ``network`` in place with Adam on MSE; keep the weights of the best validation epoch.

    All tensors must already be on the network's device (targets standardised, float32).
    After each epoch ``epoch_callback`` receives ``{"epoch", "train_loss", "val_loss", "val_rmse"}``
    (``val_rmse = sqrt(val_loss) * target_scale``: original units); an exception it raises
    propagates. Training stops after ``patience`` epochs without a lower validation loss (None:
    never early) or after ``max_epochs``. Raises :class:`NonFiniteLossError` on a NaN/inf loss.

    ``compile`` (False, True or a mode of :data:`COMPILE_MODES`) trains full batches through
    ``torch.compile(network)``; the last, smaller batch of an epoch and the validation pass run
    eagerly, so one shape is compiled. On this project's CPU workloads the fused eager kernel is
    about as fast and compiling costs a minute per new shape, so the default is off.

    Checkpointing (used to retry a trial whose worker died): ``state_callback`` receives, after
    each epoch and before ``epoch_callback``, the whole training state (:data:`TRAINING_STATE_KEYS`;
    its tensors are live, so serialise or copy them before training goes on). Passing such a state
    as ``resume_state`` continues from the epoch after it as the uninterrupted run would have
    (same batch order, optimizer moments, early-stopping bookkeeping and history).
    """
    learning_rate = check_positive("learning_rate", learning_rate)
    batch_size = check_int("batch_size", batch_size)
    max_epochs = check_int("max_epochs", max_epochs)
    patience = None if patience is None else check_int("patience", patience)
    grad_clip = None if grad_clip is None else check_positive("grad_clip", grad_clip)
    weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
    compile_mode = resolve_compile(compile)
    if len(X_train) == 0 or len(X_val) == 0:
        raise ValueError("training and validation parts must each hold at least one row")

    device = X_train.device
    parameters = [p for p in network.parameters() if p.requires_grad]
    # fused Adam: one kernel for all parameters instead of a Python loop over them
    optimizer = torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)
    generator = torch.Generator().manual_seed(seed)  # batch order; CPU generator, same on any device
    n_rows = len(X_train)
    result = TrainingResult()
    best_state = _snapshot(network)
    epochs_without_improvement = 0
    first_epoch = 1
    if resume_state is not None:
        missing = [key for key in TRAINING_STATE_KEYS if key not in resume_state]
        if missing:
            raise ValueError(f"resume_state lacks {', '.join(missing)}; pass a state given to state_callback")
        network.load_state_dict(resume_state["network"])
        optimizer.load_state_dict(resume_state["optimizer"])
        generator.set_state(resume_state["generator"])
        best_state = {name: value.detach().clone().to(device) for name, value in resume_state["best_state"].items()}
        result.history = [dict(record) for record in resume_state["history"]]
        result.best_val_loss = float(resume_state["best_val_loss"])
        result.best_epoch = int(resume_state["best_epoch"])
        epochs_without_improvement = int(resume_state["epochs_without_improvement"])
        first_epoch = int(resume_state["epoch"]) + 1
        if patience is not None and epochs_without_improvement >= patience:
            first_epoch = max_epochs + 1  # it had stopped early already

    compiled = torch.compile(network, mode=compile_mode, dynamic=False) if compile_mode else network

    network.train()
    for epoch in range(first_epoch, max_epochs + 1):
        order = torch.randperm(n_rows, generator=generator).to(device)
        inputs, targets = X_train.index_select(0, order), y_train.index_select(0, order)
        loss_sum = torch.zeros((), device=device)
        for start in range(0, n_rows, batch_size):
            batch_inputs = inputs[start : start + batch_size]
            batch_targets = targets[start : start + batch_size]
            forward = compiled if len(batch_inputs) == batch_size else network
            if compile_mode == "reduce-overhead" and forward is compiled:
                torch.compiler.cudagraph_mark_step_begin()  # CUDA graphs: a new training step starts
            loss = F.mse_loss(forward(batch_inputs), batch_targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(parameters, grad_clip)
            optimizer.step()
            loss_sum += loss.detach() * len(batch_inputs)
        train_loss = float(loss_sum) / n_rows  # the epoch's one sync
        val_loss = mean_squared_error(network, X_val, y_val)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise NonFiniteLossError(
                f"loss became non-finite in epoch {epoch} (train_loss={train_loss}, val_loss={val_loss}); "
                f"try a lower learning_rate (now {learning_rate:g}) or set grad_clip"
            )
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_rmse": math.sqrt(val_loss) * target_scale,
        }
        result.history.append(record)
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            best_state = _snapshot(network)
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
        if state_callback is not None:
            state_callback(
                {
                    "epoch": epoch,
                    "network": network.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "best_state": best_state,
                    "best_val_loss": result.best_val_loss,
                    "best_epoch": result.best_epoch,
                    "epochs_without_improvement": epochs_without_improvement,
                    "history": [dict(r) for r in result.history],
                }
            )
        if epoch_callback is not None:
            epoch_callback(dict(record))
        if patience is not None and epochs_without_improvement >= patience:
            break
    network.load_state_dict(best_state)
    network.eval()
    return result


__all__ = [
    "COMPILE_ENVIRONMENT_VARIABLE",
    "COMPILE_MODES",
    "EpochCallback",
    "NonFiniteLossError",
    "StateCallback",
    "TRAINING_STATE_KEYS",
    "TrainingResult",
    "compile_from_environment",
    "mean_squared_error",
    "predict_tensor",
    "resolve_compile",
    "resolve_device",
    "torch_threads",
    "train_network",
]

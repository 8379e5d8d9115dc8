"""Knowledge distillation: train a small (compressed) student to imitate a larger teacher.

* :func:`distillation_loss` — Hinton et al. (2015): KL divergence between the temperature-softened
  output distributions, scaled by ``T**2``, optionally mixed with cross-entropy on the labels. A list
  of teacher logits is an ensemble whose soft targets are the average of its softened probabilities.
* :class:`FeatureMatcher` — FitNets (Romero et al., 2015): MSE between intermediate features of the
  student and the teacher, through a learned 1x1 conv / linear projection where their widths differ.
* :class:`Distiller` — runs the teacher(s) and the student together and trains the student;
  :func:`train_classifier` is the label-only baseline with the same loop, :func:`evaluate_accuracy`
  the top-1 accuracy both are judged by.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._modes import training_mode

TeacherLogits = Union[torch.Tensor, Sequence[torch.Tensor]]


def _check_hyperparameters(temperature: float, alpha: float) -> None:
    if not isinstance(temperature, (int, float)) or not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def _teacher_list(teacher_logits: TeacherLogits) -> list[torch.Tensor]:
    if isinstance(teacher_logits, torch.Tensor):
        return [teacher_logits]
    if isinstance(teacher_logits, (list, tuple)):
        if not teacher_logits:
            raise ValueError("teacher_logits is an empty ensemble: give at least one teacher's logits")
        for i, t in enumerate(teacher_logits):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"teacher_logits[{i}] must be a tensor, got {type(t).__name__}")
        return list(teacher_logits)
    raise TypeError(f"teacher_logits must be a tensor or a list/tuple of tensors, got {type(teacher_logits).__name__}")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: TeacherLogits,
                      targets: Optional[torch.Tensor] = None, temperature: float = 4.0,
                      alpha: float = 0.9) -> torch.Tensor:
    """Hinton distillation loss on logits ``[batch, classes]`` (or ``[..., classes]``).

    soft = ``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the rows (the
    ``T**2`` keeps the gradient's size independent of ``T``). With ``targets`` (class indices of the
    batch shape) the result is ``alpha * soft + (1 - alpha) * cross_entropy(student, targets)``;
    without, ``soft``. A list/tuple of teacher logits is an ensemble: its soft targets are the mean of
    the teachers' softened probabilities (not of their logits). Teachers get no gradient."""
    _check_hyperparameters(temperature, alpha)
    if not isinstance(student_logits, torch.Tensor):
        raise TypeError(f"student_logits must be a tensor, got {type(student_logits).__name__}")
    if student_logits.dim() < 2:
        raise ValueError(f"student_logits must have shape [batch, classes] (or [..., classes]), "
                         f"got {_shape(student_logits)}")
    teachers = _teacher_list(teacher_logits)
    single = isinstance(teacher_logits, torch.Tensor)
    for i, t in enumerate(teachers):
        if t.shape != student_logits.shape:
            name = "teacher_logits" if single else f"teacher_logits[{i}]"
            raise ValueError(f"{name} must have the shape of student_logits {_shape(student_logits)}, got {_shape(t)}")

    classes = student_logits.shape[-1]
    log_p_student = F.log_softmax(student_logits.reshape(-1, classes) / temperature, dim=-1)
    # Log of the (averaged) teacher probabilities, by logsumexp so that it stays finite.
    log_p_teacher = torch.stack([F.log_softmax(t.detach().reshape(-1, classes) / temperature, dim=-1)
                                 for t in teachers])
    log_p_teacher = torch.logsumexp(log_p_teacher, dim=0) - math.log(len(teachers))
    soft = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature ** 2
    if targets is None:
        return soft

    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a tensor of class indices, got {type(targets).__name__}")
    batch_shape = _shape(student_logits)[:-1]
    if _shape(targets) != batch_shape:
        raise ValueError(f"targets must have the batch shape of student_logits {batch_shape}, got {_shape(targets)}")
    if targets.is_floating_point() or targets.is_complex():
        raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}")
    hard = F.cross_entropy(student_logits.reshape(-1, classes), targets.reshape(-1))
    return alpha * soft + (1.0 - alpha) * hard


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)


def _width(feature: torch.Tensor) -> int:
    return feature.shape[1] if feature.dim() == 4 else feature.shape[-1]


_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"mse": F.mse_loss, "l1": F.l1_loss}


class FeatureMatcher(nn.Module):
    """Matches intermediate features of ``student`` to those of ``teacher`` (FitNets hints).

    ``pairs`` are ``(student_layer, teacher_layer)`` names from ``named_modules()``; forward hooks
    keep each layer's latest output. Where widths differ (channels of 4-D ``[N, C, H, W]`` features,
    the last dim of 2-D ``[N, F]`` ones) a learned projection (1x1 ``Conv2d`` / ``Linear``) maps the
    student width to the teacher's. Widths are only known from features, so pass ``example_input``
    (a tensor, or a tuple of positional arguments): both models then run once, in eval mode and
    without gradients, and the projections exist before the optimizer is built. A larger/smaller
    student feature map is average-pooled to the teacher's ``H x W``.

    The models are not submodules: ``parameters()`` yields only the projections. After a forward
    of both models, :meth:`loss` is the mean over pairs of ``loss(projected student, teacher)``."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: Iterable[tuple[str, str]],
                 loss: Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = "mse",
                 example_input: Any = None):
        super().__init__()
        for arg, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, nn.Module):
                raise TypeError(f"{arg} must be an nn.Module, got {type(model).__name__}")
        if isinstance(loss, str):
            if loss not in _LOSSES:
                raise ValueError(f"loss must be one of {sorted(_LOSSES)} or a callable, got {loss!r}")
            self._loss_fn = _LOSSES[loss]
        elif callable(loss):
            self._loss_fn = loss
        else:
            raise TypeError(f"loss must be a string or a callable, got {type(loss).__name__}")

        self.pairs: list[tuple[str, str]] = []
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(n, str) for n in pair)):
                raise TypeError(f"pairs[{i}] must be a (student_layer_name, teacher_layer_name) pair, got {pair!r}")
            self.pairs.append((pair[0], pair[1]))
        if not self.pairs:
            raise ValueError("pairs is empty: give at least one (student_layer_name, teacher_layer_name)")

        self._models = (student, teacher)  # a tuple, so that they are not registered as submodules
        self._features: dict[str, dict[str, Any]] = {"student": {}, "teacher": {}}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.projections = nn.ModuleDict()  # str(pair index) -> projection, only where widths differ

        roles = (("student", dict(student.named_modules()), 0), ("teacher", dict(teacher.named_modules()), 1))
        for role, modules, col in roles:  # every name is checked before any hook is registered
            for i, pair in enumerate(self.pairs):
                if pair[col] not in modules:
                    known = [n for n in modules if n]
                    shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
                    raise ValueError(f"{role} has no submodule named {pair[col]!r} (pairs[{i}]); "
                                     f"its submodules are: {shown}")
        for role, modules, col in roles:
            for name in dict.fromkeys(pair[col] for pair in self.pairs):
                self._hooks.append(modules[name].register_forward_hook(self._capture(role, name)))

        if example_input is not None:
            try:
                self._discover(example_input)
            except BaseException:
                self.remove()  # a failed construction leaves no hooks on the caller's models
                raise

    def _capture(self, role: str, name: str) -> Callable:
        store = self._features[role]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            store[name] = output
        return hook

    def _discover(self, example_input: Any) -> None:
        student, teacher = self._models
        try:
            with training_mode(student, False), training_mode(teacher, False), torch.no_grad():
                _call(student, example_input)
                _call(teacher, example_input)
            for i in range(len(self.pairs)):
                s, t = self._pair_features(i)
                if self._needs_projection(i, s, t):
                    factory = {"device": s.device, "dtype": s.dtype}
                    sw, tw = _width(s), _width(t)
                    self.projections[str(i)] = (nn.Conv2d(sw, tw, kernel_size=1, **factory) if s.dim() == 4
                                                else nn.Linear(sw, tw, **factory))
        finally:
            self._clear()

    def _clear(self) -> None:
        for store in self._features.values():
            store.clear()

    def _pair_features(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._hooks:
            raise RuntimeError("the hooks were removed by remove(): this FeatureMatcher captures nothing any more")
        s_name, t_name = self.pairs[i]
        s, t = self._features["student"].get(s_name), self._features["teacher"].get(t_name)
        if s is None or t is None:
            missing = "student" if s is None else "teacher"
            raise RuntimeError(f"no {missing} features captured yet: run both the student and the teacher forward "
                               f"before loss()")
        for role, name, f in (("student", s_name, s), ("teacher", t_name, t)):
            if not isinstance(f, torch.Tensor):
                raise TypeError(f"{role} layer {name!r} returned {type(f).__name__}; only layers that return a "
                                f"tensor can be matched")
        return s, t

    def _needs_projection(self, i: int, s: torch.Tensor, t: torch.Tensor) -> bool:
        """Checks that pair ``i`` can be matched; True where the widths differ."""
        s_name, t_name = self.pairs[i]
        if s.dim() != t.dim():
            raise ValueError(f"pairs[{i}] ({s_name!r}, {t_name!r}): student feature {_shape(s)} and teacher feature "
                             f"{_shape(t)} have different ranks")
        if s.dim() not in (2, 4):
            if s.shape != t.shape:
                raise ValueError(f"pairs[{i}] ({s_name!r}, {t_name!r}): only 2-D [N, F] and 4-D [N, C, H, W] features "
                                 f"can be projected or pooled, got student {_shape(s)} and teacher {_shape(t)}")
            return False
        return _width(s) != _width(t)

    def loss(self) -> torch.Tensor:
        """Mean over pairs of the feature loss, from the latest forward of the student and the teacher.
        The teacher features are detached; gradients reach the student and the projections."""
        terms = []
        for i, (s_name, t_name) in enumerate(self.pairs):
            s, t = self._pair_features(i)
            needs = self._needs_projection(i, s, t)
            proj = self.projections[str(i)] if str(i) in self.projections else None
            if proj is None and needs:
                raise RuntimeError(f"pairs[{i}] ({s_name!r}, {t_name!r}) needs a projection from width {_width(s)} to "
                                   f"{_width(t)}, which must exist before the optimizer is built: pass "
                                   f"example_input=... to FeatureMatcher (or Distiller) so it is created up front")
            if proj is not None:
                expected = proj.in_channels if isinstance(proj, nn.Conv2d) else proj.in_features
                if s.dim() != (4 if isinstance(proj, nn.Conv2d) else 2) or _width(s) != expected:
                    raise ValueError(f"pairs[{i}] ({s_name!r}, {t_name!r}): the projection was built for student "
                                     f"width {expected}, got student feature {_shape(s)}")
            if s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
                s = F.adaptive_avg_pool2d(s, t.shape[-2:])  # before the 1x1 projection: the two commute
            if proj is not None:
                s = proj(s)
            if s.shape != t.shape:
                raise ValueError(f"pairs[{i}] ({s_name!r}, {t_name!r}): student feature {_shape(s)} (after "
                                 f"projection/pooling) does not match teacher feature {_shape(t)}")
            terms.append(self._loss_fn(s, t.detach()))
        return torch.stack(terms).mean()

    def remove(self) -> None:
        """Removes the hooks and drops the captured features; :meth:`loss` raises afterwards."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._clear()

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}"


def _split_batch(batch: Any) -> tuple[Any, Optional[torch.Tensor]]:
    """``(inputs, targets)`` from a loader item: a pair, or inputs alone (targets None)."""
    if isinstance(batch, (tuple, list)):
        if len(batch) == 2:
            return batch[0], batch[1]
        if len(batch) == 1:
            return batch[0], None
        raise ValueError(f"a batch must be (inputs, targets) or inputs alone, got a sequence of {len(batch)} items")
    return batch, None


def _batch_size(x: Any, y: Optional[torch.Tensor]) -> int:
    for t in (y, x):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return t.shape[0]
    return 1


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _train_loop(step_loss: Callable[[Any, Optional[torch.Tensor]], torch.Tensor], model: nn.Module,
                loader: Iterable, optimizer: torch.optim.Optimizer, epochs: int, progress: bool,
                log: Optional[Callable[[str], None]], label: str) -> list[float]:
    """The loop shared by :meth:`Distiller.fit` and :func:`train_classifier`: ``model`` in train mode,
    one optimizer step per batch; returns the per-epoch mean loss (weighted by batch size)."""
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    log = log or _stderr
    history: list[float] = []
    with training_mode(model, True):
        for epoch in range(epochs):
            total, count = 0.0, 0
            for batch in loader:
                x, y = _split_batch(batch)
                optimizer.zero_grad()
                loss = step_loss(x, y)
                loss.backward()
                optimizer.step()
                n = _batch_size(x, y)
                total += loss.item() * n
                count += n
            if count == 0:
                raise ValueError("loader yielded no batches")
            history.append(total / count)
            if progress:
                log(f"{label} epoch {epoch + 1}/{epochs}: mean loss {history[-1]:.4f}")
    return history


class Distiller:
    """Trains ``student`` on the outputs of ``teachers`` (one module, or a list = an ensemble).

    The teachers are put in eval mode and run without gradients. The loss is
    :func:`distillation_loss` (``temperature``, ``alpha``) plus, with ``feature_pairs``,
    ``feature_weight`` times a :class:`FeatureMatcher` loss against the first teacher (pass
    ``example_input`` when the widths differ, so the projections exist for the optimizer)."""

    def __init__(self, student: nn.Module, teachers: Union[nn.Module, Sequence[nn.Module]],
                 temperature: float = 4.0, alpha: float = 0.9,
                 feature_pairs: Optional[Iterable[tuple[str, str]]] = None, feature_weight: float = 1.0,
                 example_input: Any = None):
        _check_hyperparameters(temperature, alpha)
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
        teachers = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
        if not teachers:
            raise ValueError("teachers is empty: give a teacher module or a list of them")
        for i, t in enumerate(teachers):
            if not isinstance(t, nn.Module):
                raise TypeError(f"teachers[{i}] must be an nn.Module, got {type(t).__name__}")
            t.eval()
        if not isinstance(feature_weight, (int, float)) or not feature_weight >= 0:
            raise ValueError(f"feature_weight must be >= 0, got {feature_weight!r}")
        self.student, self.teachers = student, teachers
        self.temperature, self.alpha, self.feature_weight = temperature, alpha, feature_weight
        self.matcher: Optional[FeatureMatcher] = None
        if feature_pairs is not None:
            self.matcher = FeatureMatcher(student, teachers[0], feature_pairs, example_input=example_input)

    def loss(self, x: Any, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Total loss on one batch: distillation (with the labels ``y`` if given) + feature matching."""
        student_logits = _call(self.student, x)
        with torch.no_grad():
            teacher_logits = []
            for t in self.teachers:
                t.eval()
                teacher_logits.append(_call(t, x))
        total = distillation_loss(student_logits, teacher_logits[0] if len(teacher_logits) == 1 else teacher_logits,
                                  y, temperature=self.temperature, alpha=self.alpha)
        if self.matcher is not None:
            total = total + self.feature_weight * self.matcher.loss()
        return total

    def parameters(self) -> list[nn.Parameter]:
        """What the optimizer must train: the student's parameters and the feature projections."""
        params = list(self.student.parameters())
        if self.matcher is not None:
            params += list(self.matcher.parameters())
        return params

    def fit(self, loader: Iterable, optimizer: torch.optim.Optimizer, epochs: int = 1, progress: bool = True,
            log: Optional[Callable[[str], None]] = None) -> list[float]:
        """Trains the student over ``loader`` (``(inputs, targets)`` batches, or inputs alone to
        distil without labels) for ``epochs``; returns the per-epoch mean loss. With ``progress``
        one line per epoch goes to ``log`` (default: stderr)."""
        return _train_loop(self.loss, self.student, loader, optimizer, epochs, progress, log, "distill")


def train_classifier(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, epochs: int = 1,
                     progress: bool = True, log: Optional[Callable[[str], None]] = None,
                     label_smoothing: float = 0.0) -> list[float]:
    """Label-only baseline: cross-entropy training with the same loop as :meth:`Distiller.fit`;
    returns the per-epoch mean loss. ``label_smoothing`` (in [0, 1)) trains on targets mixed
    with the uniform distribution; a teacher trained so gives softer, better-spread targets."""
    if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")

    def step_loss(x: Any, y: Optional[torch.Tensor]) -> torch.Tensor:
        if y is None:
            raise ValueError("train_classifier needs (inputs, targets) batches")
        logits = _call(model, x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), label_smoothing=label_smoothing)
    return _train_loop(step_loss, model, loader, optimizer, epochs, progress, log, "train")


def evaluate_accuracy(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy in [0, 1] over ``loader``'s ``(inputs, targets)``, in eval mode without
    gradients; the model's train/eval modes are restored afterwards."""
    correct, total = 0, 0
    with training_mode(model, False), torch.no_grad():
        for batch in loader:
            x, y = _split_batch(batch)
            if y is None:
                raise ValueError("evaluate_accuracy needs (inputs, targets) batches")
            correct += int((_call(model, x).argmax(dim=-1) == y).sum())
            total += y.numel()
    if total == 0:
        raise ValueError("loader yielded no samples")
    return correct / total

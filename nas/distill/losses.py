"""Distillation losses: feature-map transfer, attention transfer and output (embedding) distillation.

MobileBERT's layer-wise knowledge transfer (Sun et al., 2020, section 3.5) trains each student
layer to reproduce its teacher layer with two terms:

- feature-map transfer (FMT): mean squared error between the layer's output states;
- attention transfer (AT): KL divergence from the teacher's per-head attention distributions
  to the student's.

Where the student and teacher differ in shape we follow TinyBERT (Jiao et al., 2020): a learned
linear projection from the student's width to the teacher's (one for the embedding output, one
shared by all layers), and a uniform layer mapping when the depths differ. When head counts differ
the attention distributions are averaged over heads on both sides (a mixture of distributions is a
distribution). Output distillation compares the sentence embeddings, the teacher's own output:
mean-pooled last hidden states, the student's through the same projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.distill.data import TeacherBatch, mean_pool
from nas.model import EncoderOutput


def layer_mapping(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Pairs (student layer, teacher layer), 1-based, uniformly spaced, always pairing the last layers.

    With m = min of the depths, pair k (1..m) maps student layer floor(k * Ls / m) to teacher layer
    floor(k * Lt / m): a 4-layer student of a 6-layer teacher learns layers 1, 3, 4, 6; a 24-layer
    student of it supervises its layers 4, 8, ..., 24.
    """
    m = min(student_layers, teacher_layers)
    return [(k * student_layers // m, k * teacher_layers // m) for k in range(1, m + 1)]


class Projections(nn.Module):
    """Learned student-to-teacher width maps; identity where the widths agree (MobileBERT's case)."""

    def __init__(self, student_width: int, teacher_width: int) -> None:
        super().__init__()
        same = student_width == teacher_width
        self.embedding = nn.Identity() if same else nn.Linear(student_width, teacher_width)
        self.hidden = nn.Identity() if same else nn.Linear(student_width, teacher_width)


@dataclass
class LossWeights:
    feature: float = 1.0
    attention: float = 1.0
    output: float = 1.0


@dataclass
class Losses:
    total: torch.Tensor  # weighted sum, what is minimised
    feature: torch.Tensor
    attention: torch.Tensor
    output: torch.Tensor
    cosine: torch.Tensor  # (B,) cosine of student and teacher sentence embeddings


def feature_map_loss(
    student_hidden: tuple[torch.Tensor, ...],
    teacher_hidden: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    mapping: list[tuple[int, int]],
    projections: Projections,
) -> torch.Tensor:
    """Mean over the embedding output and the mapped layers of the per-element MSE over real tokens."""
    weights = mask.to(student_hidden[0].dtype).unsqueeze(-1)  # (B, T, 1)
    denominator = weights.sum() * teacher_hidden[0].shape[-1]
    terms = []
    for s, t in [(0, 0), *mapping]:
        project = projections.embedding if s == 0 else projections.hidden
        diff = project(student_hidden[s]) - teacher_hidden[t]  # (B, T, H_teacher)
        terms.append((diff.square() * weights).sum() / denominator)
    return torch.stack(terms).mean()


def attention_loss(
    student_attentions: tuple[torch.Tensor, ...],
    teacher_attentions: tuple[torch.Tensor, ...],
    mask: torch.Tensor,
    mapping: list[tuple[int, int]],
) -> torch.Tensor:
    """Mean over mapped layers of KL(teacher || student) per attention row, over real query tokens.

    Teacher maps are (B, nh, T, T) when the head counts agree (compared head by head), else
    (B, T, T) already averaged over heads, and the student's are averaged the same way.
    """
    rows = mask.to(student_attentions[0].dtype)  # (B, T) query positions that are real tokens
    terms = []
    for s, t in mapping:
        p_student, p_teacher = student_attentions[s - 1], teacher_attentions[t - 1]
        if p_teacher.dim() == 3:
            p_student = p_student.mean(dim=1)  # (B, T, T)
            row_weights = rows
        else:
            row_weights = rows.unsqueeze(1).expand(-1, p_teacher.shape[1], -1)  # (B, nh, T)
        # KL(p_t || p_s) = sum_j p_t log p_t - p_t log p_s; padded keys have p_t = 0 and contribute 0
        kl = (torch.special.xlogy(p_teacher, p_teacher) - p_teacher * p_student.clamp_min(1e-12).log()).sum(-1)
        terms.append((kl * row_weights).sum() / row_weights.sum())
    return torch.stack(terms).mean()


def embedding_cosine(
    student_last: torch.Tensor, teacher_embedding: torch.Tensor, mask: torch.Tensor, projections: Projections
) -> torch.Tensor:
    """(B,) cosine between the student's projected, mean-pooled last hidden state and the teacher's embedding."""
    student_embedding = mean_pool(projections.hidden(student_last), mask)
    return F.cosine_similarity(student_embedding, teacher_embedding, dim=-1, eps=1e-8)


def distillation_losses(
    student: EncoderOutput,
    teacher: TeacherBatch,
    mask: torch.Tensor,
    mapping: list[tuple[int, int]],
    projections: Projections,
    weights: LossWeights,
) -> Losses:
    """All three terms and their weighted sum; a term whose weight is 0 is not computed (reported as 0)."""
    zero = student.last_hidden_state.new_zeros(())
    feature = (
        feature_map_loss(student.hidden_states, teacher.hidden_states, mask, mapping, projections)
        if weights.feature
        else zero
    )
    attention = attention_loss(student.attentions, teacher.attentions, mask, mapping) if weights.attention else zero
    cosine = embedding_cosine(student.last_hidden_state, teacher.embedding, mask, projections)
    output = (1.0 - cosine).mean()
    total = weights.feature * feature + weights.attention * attention + weights.output * output
    return Losses(total=total, feature=feature, attention=attention, output=output, cosine=cosine)


class LinearReadout:
    """The least-squares affine map from the student's last-layer token states to the teacher's.

    Accumulates the normal equations over training tokens as the run sees them (float64) and solves
    them with a small ridge at each checkpoint. The score reads the held-out sentence embedding
    through this map: a learned head needs far more than a short run's steps to converge (60 AdamW
    steps reached a held-out cosine of 0.46-0.55 where the least-squares fit of the same features
    reached 0.69), so a learned head would score the optimiser, not the architecture.
    Mean pooling commutes with an affine map, so the token-level fit serves pooled embeddings.
    """

    def __init__(self, student_width: int, teacher_width: int, ridge: float = 1e-3) -> None:
        self.ridge = ridge
        self.gram = torch.zeros(student_width + 1, student_width + 1, dtype=torch.float64)
        self.cross = torch.zeros(student_width + 1, teacher_width, dtype=torch.float64)
        self.tokens = 0

    @torch.no_grad()
    def add(self, student_states: torch.Tensor, teacher_states: torch.Tensor, mask: torch.Tensor) -> None:
        keep = mask.bool()
        x = student_states.detach()[keep].float()  # (N, Hs)
        x = torch.cat([x, x.new_ones(len(x), 1)], dim=1)  # (N, Hs + 1): the bias column
        y = teacher_states[keep].float()  # (N, Ht)
        # one batch's sums in float32 (a few hundred terms) on the run's device, the running sums in float64 on the CPU
        self.gram += (x.T @ x).double().to(self.gram.device)
        self.cross += (x.T @ y).double().to(self.cross.device)
        self.tokens += len(x)

    def solve(self) -> torch.Tensor:
        """(Hs + 1, Ht) weights; the ridge is relative to the mean feature energy, so scale-free."""
        d = self.gram.shape[0]
        ridge = self.ridge * float(self.gram.diagonal().mean()) + 1e-12
        return torch.linalg.solve(self.gram + ridge * torch.eye(d, dtype=torch.float64), self.cross)

    @staticmethod
    def apply(weights: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        pooled = pooled.double()
        return (torch.cat([pooled, pooled.new_ones(len(pooled), 1)], dim=1) @ weights.to(pooled.device)).float()

    def reset(self) -> None:
        self.gram.zero_()
        self.cross.zero_()
        self.tokens = 0

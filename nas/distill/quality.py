"""Read a distilled student's quality through a downstream probe instead of the teacher cosine.

The cosine read-out of a short distillation run asks "how close is the student's sentence
embedding to the teacher's", which a 2-layer student that keeps its (teacher-initialised) token
vectors nearly intact answers well. The probe asks what users ship for: how well a linear
classifier on the student's frozen features separates the classes of a real labelled task.
It is a closed-form ridge fit (no learning rate to sweep, no seed), on examples drawn from the
task's *train* split only, so the dev split that fine-tuning reports on is never seen.
"""

from __future__ import annotations

import torch

from nas.distill.data import mean_pool
from nas.model import Encoder

PROBE_TASK = "wordnet-supersense"
PROBE_FIT, PROBE_EVAL = 2000, 1000  # examples from the train split: fit the probe, score it
PROBE_SEQ_LEN = 48
PROBE_RIDGE = 1e-2


@torch.no_grad()
def probe_features(encoder: Encoder, ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, 2H) float64 features: the mean-pooled embedding output and last hidden state, standardised later."""
    encoder.eval()
    out = []
    for lo in range(0, len(ids), batch_size):
        m = mask[lo : lo + batch_size]
        length = max(1, int(m.sum(1).max()))
        m = m[:, :length]
        result = encoder(ids[lo : lo + batch_size, :length], attention_mask=m, output_hidden_states=True)
        pooled = [mean_pool(h.float(), m) for h in (result.hidden_states[0], result.last_hidden_state)]
        out.append(torch.cat(pooled, dim=1).double())
    return torch.cat(out)


def ridge_probe_accuracy(train_x, train_y, eval_x, eval_y, num_labels: int, ridge: float = PROBE_RIDGE) -> float:
    """Accuracy of a one-vs-all ridge classifier (closed form) fit on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mean) / std, (eval_x - mean) / std
    a = torch.cat([a, a.new_ones(len(a), 1)], 1)
    b = torch.cat([b, b.new_ones(len(b), 1)], 1)
    targets = torch.nn.functional.one_hot(train_y, num_labels).double()
    gram = a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=a.dtype)
    weights = torch.linalg.solve(gram, a.T @ targets)
    return float(((b @ weights).argmax(1) == eval_y).double().mean())


_PROBE_DATA: dict = {}


def _probe_data(tokenizer=None):
    """The probe's encoded examples, label count, and (fit, eval) indices, loaded once per tokenizer."""
    key = id(tokenizer)
    if key not in _PROBE_DATA:
        from nas.distill.teacher import load_teacher
        from nas.finetune.run import encode
        from nas.finetune.tasks import load_task

        tokenizer = tokenizer or load_teacher(None).tokenizer
        task = load_task(PROBE_TASK, max_train=PROBE_FIT + PROBE_EVAL, max_dev=2)
        data = encode(tokenizer, task.train_texts, None, task.train_labels, PROBE_SEQ_LEN)
        # the task keeps WordNet's file order (grouped by part of speech): split by a fixed permutation
        order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))
        _PROBE_DATA[key] = (data, task.num_labels, order[:PROBE_FIT], order[PROBE_FIT:])
    return _PROBE_DATA[key]


def probe_score(encoder: Encoder, tokenizer=None) -> float:
    """Held-out accuracy of a linear probe of the student's features on the embedded supersense task."""
    data, num_labels, fit, rest = _probe_data(tokenizer)
    features = probe_features(encoder, data.ids, data.mask)
    return ridge_probe_accuracy(features[fit], data.labels[fit], features[rest], data.labels[rest], num_labels)


def probe_baseline(tokenizer=None) -> float:
    """The probe's score for a constant embedding (the same features for every input): the floor a
    student must beat to carry any information about its input."""
    data, num_labels, fit, rest = _probe_data(tokenizer)
    constant = torch.zeros(len(data.labels), 1, dtype=torch.float64)
    return ridge_probe_accuracy(constant[fit], data.labels[fit], constant[rest], data.labels[rest], num_labels)

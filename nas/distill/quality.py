"""Read a distilled student's quality through a downstream probe instead of the teacher cosine.

Two probes. ``lp_score`` (``DistillConfig(score="lp")``) is the ground truth's own grade at a
smaller size: a multinomial logistic head (``nas.finetune.run.fit_linear_head``) on the mean-pooled
last hidden state, for the 45 supersenses and the 4 parts of speech of WordNet glosses, the score
being the mean of the two accuracies. Its glosses come from the task's training split, beyond the
first 8,000 of the split's seeded order (``LP_SKIP``: the ground truth's head is fit on those), so
the ground truth's glosses, dev or train, are never read. ``probe_score`` (``score="probe"``, the
default of sessions 1-2) is a ridge probe of the supersenses on the embedding output and the last
hidden state.

The cosine read-out of a short distillation run asks "how close is the student's sentence
embedding to the teacher's", which a 2-layer student that keeps its (teacher-initialised) token
vectors nearly intact answers well. The probe asks what users ship for: how well a linear
classifier on the student's frozen features separates the classes of a real labelled task.
It is a closed-form ridge fit (no learning rate to sweep, no seed), on examples drawn from the
task's *train* split only, so the dev split that fine-tuning reports on is never seen.
"""

from __future__ import annotations

import functools

import torch

from nas.distill.data import mean_pool
from nas.model import Encoder

PROBE_TASK = "wordnet-supersense"
PROBE_FIT, PROBE_EVAL = 2000, 1000  # examples from the train split: fit the probe, score it
PROBE_SEQ_LEN = 48
PROBE_RIDGE = 1e-2


@torch.no_grad()
def probe_features(encoder: Encoder, ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, 2H) float64 features on the CPU: the mean-pooled embedding output and last hidden state,
    standardised later. The encoder runs in fp32 on its own device."""
    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    for lo in range(0, len(ids), batch_size):
        m = mask[lo : lo + batch_size]
        length = max(1, int(m.sum(1).max()))
        m = m[:, :length].to(device)
        result = encoder(ids[lo : lo + batch_size, :length].to(device), attention_mask=m, output_hidden_states=True)
        pooled = [mean_pool(h.float(), m) for h in (result.hidden_states[0], result.last_hidden_state)]
        out.append(torch.cat(pooled, dim=1).double().cpu())
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


@functools.lru_cache(maxsize=4)  # once per tokenizer (None: the default teacher's)
def _probe_data(tokenizer=None):
    """The probe's encoded examples, label count, and (fit, eval) indices."""
    from nas.distill.teacher import load_teacher
    from nas.finetune.run import encode
    from nas.finetune.tasks import load_task

    tokenizer = tokenizer or load_teacher(None).tokenizer
    task = load_task(PROBE_TASK, max_train=PROBE_FIT + PROBE_EVAL, max_dev=2)
    data = encode(tokenizer, task.train_texts, None, task.train_labels, PROBE_SEQ_LEN)
    # the task keeps WordNet's file order (grouped by part of speech): split by a fixed permutation
    order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))
    return data, task.num_labels, order[:PROBE_FIT], order[PROBE_FIT:]


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


LP_SKIP = 8000  # the ground truth's head is fit on the first 8,000 of the train split's seeded order
LP_EXAMPLES = 8000  # the default: the next 16,000 glosses, 8,000 to fit the heads and 8,000 to read them
LP_BATCH = 64


def lp_positions(train_size: int, examples: int = LP_EXAMPLES) -> list[int]:
    """Which glosses of the task's training split the lp read-out uses: the ``2 * examples`` after
    the ground truth's 8,000 in the split's seeded order (``load_task(max_train=N)`` keeps the
    first N of it); the first half fits the heads, the second half reads them."""
    from nas.finetune.tasks import cap_order

    if LP_SKIP + 2 * examples > train_size:
        raise ValueError(f"the lp read-out needs {LP_SKIP + 2 * examples} training glosses; the task has {train_size}")
    return cap_order(train_size, "train", 0)[LP_SKIP : LP_SKIP + 2 * examples]


def part_of_speech(label_names) -> tuple[list[str], torch.Tensor]:
    """The parts of speech of supersense labels (``noun.artifact`` -> ``noun``): their names, and a
    tensor mapping each supersense index to its part of speech's index."""
    names = sorted({name.split(".")[0] for name in label_names})
    return names, torch.tensor([names.index(name.split(".")[0]) for name in label_names])


@functools.lru_cache(maxsize=4)  # once per tokenizer and size
def _lp_data(tokenizer=None, examples: int = LP_EXAMPLES):
    """The lp read-out's encoded glosses, their (supersense, part-of-speech) labels and label
    counts, and the (fit, eval) positions."""
    from nas.distill.teacher import load_teacher
    from nas.finetune.run import encode
    from nas.finetune.tasks import load_task

    tokenizer = tokenizer or load_teacher(None).tokenizer
    task = load_task(PROBE_TASK)
    chosen = lp_positions(len(task.train_labels), examples)
    texts = [task.train_texts[i] for i in chosen]
    supersense = torch.tensor([task.train_labels[i] for i in chosen])
    pos_names, to_pos = part_of_speech(task.label_names)
    data = encode(tokenizer, texts, None, supersense.tolist(), PROBE_SEQ_LEN)
    # shortest first: batches cut to their longest gloss then hold little padding (4x faster)
    order = data.mask.sum(1).argsort(stable=True)
    data = type(data)(data.ids[order], data.mask[order], data.token_types[order], data.labels[order])
    labels = ((supersense[order], task.num_labels), (to_pos[supersense[order]], len(pos_names)))
    position = order.argsort()  # where each chosen gloss sits after the sort
    return data, labels, position[:examples], position[examples:]


def _lp_accuracies(features: torch.Tensor, tokenizer=None, examples: int = LP_EXAMPLES, crossfit: bool = False) -> list[float]:
    """Each head's accuracy fit on the first half of the glosses and read on the second, then with
    ``crossfit`` the same the other way round (every gloss read once, two fits per head)."""
    from nas.finetune.run import linear_head_outcomes

    _, labels, fit, rest = _lp_data(tokenizer, examples)
    directions = [(fit, rest), (rest, fit)] if crossfit else [(fit, rest)]
    return [float(linear_head_outcomes(features[a], y[a], features[b], y[b], count).float().mean())
            for a, b in directions for y, count in labels]


def _lp_accuracy(features: torch.Tensor, tokenizer=None, examples: int = LP_EXAMPLES, crossfit: bool = False) -> float:
    """The mean of ``_lp_accuracies``: the lp read-out of these features."""
    accuracies = _lp_accuracies(features, tokenizer, examples, crossfit)
    return sum(accuracies) / len(accuracies)


def _lp_features(encoder: Encoder, tokenizer, precision: str, device: torch.device | None, examples: int) -> torch.Tensor:
    """The student's pooled features of the lp glosses (on the encoder's own device by default)."""
    from nas.finetune.run import pooled_features

    data = _lp_data(tokenizer, examples)[0]
    device = device if device is not None else next(encoder.parameters()).device
    return pooled_features(encoder, data, LP_BATCH, precision, device)


def lp_score(encoder: Encoder, tokenizer=None, precision: str = "fp32", device: torch.device | None = None,
             examples: int = LP_EXAMPLES, crossfit: bool = False) -> float:
    """The mean accuracy of the supersense and part-of-speech heads on the student's pooled features,
    fit on ``examples`` glosses and read on as many more (with ``crossfit``, also the other way round)."""
    return _lp_accuracy(_lp_features(encoder, tokenizer, precision, device, examples), tokenizer, examples, crossfit)


def lp_readings(encoder: Encoder, tokenizer=None, precision: str = "fp32", device: torch.device | None = None,
                examples: int = LP_EXAMPLES) -> tuple[float, float]:
    """``lp_score`` and its cross-fitted reading (each half fits the heads that read the other), from
    one pass over the glosses and one fit per head and direction: the same student read two ways."""
    accuracies = _lp_accuracies(_lp_features(encoder, tokenizer, precision, device, examples), tokenizer, examples, crossfit=True)
    one_way = accuracies[: len(accuracies) // 2]  # the first direction's heads: lp_score's reading
    return sum(one_way) / len(one_way), sum(accuracies) / len(accuracies)


def lp_baseline(tokenizer=None, examples: int = LP_EXAMPLES, crossfit: bool = False) -> float:
    """``lp_score`` for a constant embedding: each head's majority class, the floor of the read-out."""
    data = _lp_data(tokenizer, examples)[0]
    return _lp_accuracy(torch.zeros(len(data.labels), 1), tokenizer, examples, crossfit)

